"""Plain functions holding the worker's logic: verify and decode a batch, shape it for Redis.

No faust and no Redis here, so every rule is testable with values alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from shared.errors import EventDecodeError, SignatureError
from shared.events import Keyring, check
from shared.keys import RedisKeys

__all__ = ["DeadLetter", "PreparedBatch", "RawRecord", "Record", "prepare_batch"]

# Keys of live tokens outlive their expiry a little, so clocks that differ slightly between
# regions never drop a key a validator still asks for (validators check expiry themselves).
EXPIRY_MARGIN_MS = 60_000
DEFAULT_TOMBSTONE_TTL_MS = 30 * 24 * 3600 * 1000


class Record(Protocol):
    """What the worker reads of a consumed record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as consumed: where it was, and its undecoded bytes."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record refused, and why (``signature``, ``decode``)."""

    record: Record
    reason: str
    detail: str


@dataclass
class PreparedBatch:
    """A batch ready for one Lua call: the verified events' bytes, offsets, and what was refused.

    Verified token and epoch events travel to Redis as the exact bytes that were signed
    (one JSON array), so nothing is re-encoded on the way.
    """

    keys: list[str] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    heartbeats: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    beats: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Token and epoch events to apply."""
        return len(self.values)

    def script_args(
        self,
        generation: str,
        now_ms: int,
        keys: RedisKeys,
        tombstone_ttl_ms: int = DEFAULT_TOMBSTONE_TTL_MS,
    ) -> list[str | int | bytes]:
        """ARGV for ``apply.lua``."""
        offsets = [[p, o, self.beats.get(p, 0)] for p, o in sorted(self.next_offsets.items())]
        return [
            generation,
            now_ms,
            keys.invalidations,
            keys.token(""),
            EXPIRY_MARGIN_MS,
            tombstone_ttl_ms,
            b"[" + b",".join(self.values) + b"]",
            orjson.dumps(offsets),
        ]


def prepare_batch(records: Iterable[Record], keyring: Keyring, keys: RedisKeys) -> PreparedBatch:
    """Verify and decode ``records``; refused ones become dead letters."""
    batch = PreparedBatch(keys=[keys.meta, keys.partitions, keys.epochs])
    next_offsets = batch.next_offsets
    beats = batch.beats
    values = batch.values
    for record in records:
        partition = record.partition
        if record.offset >= next_offsets.get(partition, 0):
            next_offsets[partition] = record.offset + 1
        try:
            beat = check(record.key, record.value, record.headers, keyring)
        except SignatureError as e:
            batch.dead_letters.append(DeadLetter(record, "signature", str(e)))
            continue
        except EventDecodeError as e:
            batch.dead_letters.append(DeadLetter(record, "decode", str(e)))
            continue
        if beat is None:
            values.append(record.value)  # type: ignore[arg-type]  # check() refused None
        else:
            batch.heartbeats += 1
            if beat.partition == partition and beat.at_ms > beats.get(partition, 0):
                beats[partition] = beat.at_ms
    return batch
