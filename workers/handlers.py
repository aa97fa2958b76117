"""Plain functions holding the worker's logic: verify and decode a batch, shape it for Redis.

No faust and no Redis here, so every rule is testable with values alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from shared.errors import EventDecodeError, SignatureError
from shared.events import EpochEvent, Heartbeat, Keyring, TokenEvent, TokenOp, decode
from shared.keys import RedisKeys

__all__ = ["DeadLetter", "PreparedBatch", "RawRecord", "prepare_batch"]

# Keys of live tokens outlive their expiry a little, so clocks that differ slightly between
# regions never drop a key a validator still asks for (validators check expiry themselves).
EXPIRY_MARGIN_MS = 60_000
DEFAULT_TOMBSTONE_TTL_MS = 30 * 24 * 3600 * 1000
_OPS = {TokenOp.ISSUED: "i", TokenOp.UPDATED: "u", TokenOp.REVOKED: "r"}


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

    record: RawRecord
    reason: str
    detail: str


@dataclass
class PreparedBatch:
    """A batch ready for one Lua call: its keys, its arguments, and what was refused."""

    keys: list[str] = field(default_factory=list)
    args: list[str | int] = field(default_factory=list)
    records: int = 0
    heartbeats: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    beats: dict[int, int] = field(default_factory=dict)

    def script_args(self, generation: str, now_ms: int, channel: str) -> list[str | int]:
        """ARGV for ``apply.lua``."""
        tail: list[str | int] = [len(self.next_offsets)]
        for partition, next_offset in sorted(self.next_offsets.items()):
            tail += [partition, next_offset, self.beats.get(partition, 0)]
        return [generation, now_ms, channel, self.records, *self.args, *tail]


def _token_args(event: TokenEvent, now_ms: int, tombstone_ttl_ms: int) -> list[str | int]:
    expires = event.expires_at_ms
    if expires is not None:
        key_expire_at = expires + EXPIRY_MARGIN_MS
    elif event.op is TokenOp.REVOKED:
        key_expire_at = now_ms + tombstone_ttl_ms
    else:
        key_expire_at = 0
    return [
        "T",
        event.seq,
        _OPS[event.op],
        "" if event.token_id is None else event.token_id,
        event.tokenable_type,
        event.tokenable_id,
        event.name,
        orjson.dumps(list(event.abilities)).decode(),
        event.created_at_ms,
        event.issued_at_ms,
        "" if expires is None else expires,
        key_expire_at,
    ]


def prepare_batch(
    records: Sequence[RawRecord],
    keyring: Keyring,
    keys: RedisKeys,
    now_ms: int,
    tombstone_ttl_ms: int = DEFAULT_TOMBSTONE_TTL_MS,
) -> PreparedBatch:
    """Verify, decode and shape ``records``; refused ones become dead letters."""
    batch = PreparedBatch(keys=[keys.meta, keys.partitions, keys.epochs])
    for record in records:
        current = batch.next_offsets.get(record.partition, 0)
        batch.next_offsets[record.partition] = max(current, record.offset + 1)
        try:
            event = decode(record.key, record.value, record.headers, keyring)
        except SignatureError as e:
            batch.dead_letters.append(DeadLetter(record, "signature", str(e)))
            continue
        except EventDecodeError as e:
            batch.dead_letters.append(DeadLetter(record, "decode", str(e)))
            continue
        if isinstance(event, Heartbeat):
            batch.heartbeats += 1
            if event.partition == record.partition:
                batch.beats[record.partition] = max(
                    batch.beats.get(record.partition, 0), event.at_ms
                )
        elif isinstance(event, TokenEvent):
            batch.keys.append(keys.token(event.token_hash))
            batch.args += _token_args(event, now_ms, tombstone_ttl_ms)
            batch.records += 1
        elif isinstance(event, EpochEvent):
            batch.args += ["E", event.scope, event.before_ms]
            batch.records += 1
    return batch
