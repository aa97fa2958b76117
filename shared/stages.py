"""Stage timing of the token stream (``TOKENSYNC_STAGE_TIMING``): where a record's
milliseconds go, for ``tokensync bench propagation --breakdown``.

Off by default, and then every hook is one flag test. When on:

- the relay stamps each outbox record with a ``ts-stages`` header: its seq, when the
  relay woke for the batch and when it produced the record (wall clock, microseconds);
- the relay keeps, in its own process, when the broker acknowledged each seq (the
  benchmark runs the relay in its process and reads them with ``acked_at_us``);
- a region's worker writes, per stamped record, the relay's two stamps plus when it
  took the fetch from the consumer and when Redis answered the apply into the debug
  hash ``RedisKeys.stages`` (field: seq; value: ``woke,produced,fetched,applied``),
  which expires ``DEBUG_TTL_S`` after its last write.

The header is not signed (it only carries timings) and regions ignore it unless this
setting is on; it never carries a token or a hash. Timestamps are wall clock, so stages
across processes are comparable on one machine only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "DEBUG_TTL_S",
    "STAGE_HEADER",
    "BatchStages",
    "RecordStages",
    "acked_at_us",
    "enable",
    "enabled",
    "now_us",
    "parse_header",
    "parse_stages",
    "record_applied",
]

STAGE_HEADER = "ts-stages"
DEBUG_TTL_S = 600
_ACKED_KEPT = 100_000  # seqs whose acknowledgement time the relay's process remembers


def now_us() -> int:
    """Wall clock in microseconds."""
    return time.time_ns() // 1000


class _State:
    """The process's switch and the acknowledgements its relay saw."""

    def __init__(self) -> None:
        self.on = False
        self.lock = threading.Lock()
        self.acked: OrderedDict[int, int] = OrderedDict()


_state = _State()


def enable(on: bool) -> None:
    """Switch stage timing on or off for this process (entry points: from settings)."""
    _state.on = on


def enabled() -> bool:
    """Whether stage timing is on in this process."""
    return _state.on


# --- the relay (its hooks are ``shared.tracing``'s) ---------------------------------------
def relay_acked(seqs: Iterable[int]) -> None:
    """The broker acknowledged these seqs (remembered in this process)."""
    if not _state.on:
        return
    at = now_us()
    with _state.lock:
        acked = _state.acked
        for seq in seqs:
            acked[seq] = at
        while len(acked) > _ACKED_KEPT:
            acked.popitem(last=False)


def acked_at_us(seq: int) -> int | None:
    """When the relay of this process saw ``seq`` acknowledged (None: not seen)."""
    with _state.lock:
        return _state.acked.get(seq)


# --- the worker --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecordStages:
    """One record's stamps, microseconds of the wall clock (0: not known)."""

    seq: int
    woke_us: int
    produced_us: int
    fetched_us: int = 0
    applied_us: int = 0


@dataclass(slots=True)
class BatchStages:
    """The stamped records of one fetch, when the worker took it, verified it and handed
    it to Redis, and the trace contexts it carried (``shared.tracing``)."""

    fetched_us: int
    records: list[tuple[int, int, int]] = field(default_factory=list)  # seq, woke, produced
    verified_us: int = 0
    parents: list[tuple[bytes, int]] = field(default_factory=list)  # traceparent, produced
    apply_started_us: int = 0

    def applied(self, applied_us: int) -> dict[str, str]:
        """The debug hash's fields for this batch, applied at ``applied_us``."""
        return {
            str(seq): f"{woke},{produced},{self.fetched_us},{applied_us}"
            for seq, woke, produced in self.records
        }


async def record_applied(
    client: aioredis.Redis, key: str, stages: BatchStages, applied_us: int
) -> None:
    """Write the stamps of a batch Redis applied at ``applied_us`` into the hash ``key``."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping=stages.applied(applied_us))  # type: ignore[arg-type]
    pipe.expire(key, DEBUG_TTL_S)
    await pipe.execute()


def parse_header(raw: bytes) -> tuple[int, int, int] | None:
    try:
        seq, woke, produced = (int(part) for part in raw.split(b",", 2))
    except ValueError:
        return None
    return seq, woke, produced


def parse_stages(seq: int, value: bytes | str | None) -> RecordStages | None:
    """A field of the debug hash back as stamps (None: absent or malformed)."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        woke, produced, fetched, applied = (int(part) for part in text.split(","))
    except ValueError:
        return None
    return RecordStages(seq, woke, produced, fetched, applied)
