"""The one reader of what a region's Redis says about itself: ready, applied offsets,
heartbeats, bootstrap progress, dead letters.

Workers write this state (``workers/*.lua``); ``tokensync region status``, doctor
and the admin API's regions route, the bootstrap progress of ``region add`` and
of the worker, and receipts read it here, in one round trip. Field names live in
``shared.keys``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from shared.keys import (
    DEAD_LETTER_NO_SEQ,
    PRESENT_FIELD,
    MetaField,
    PartitionField,
    RedisKeys,
    parse_dead_letter_member,
)

__all__ = [
    "DeadLetters",
    "PartitionState",
    "RegionState",
    "count_tokens",
    "read_region_state",
    "read_region_state_async",
]


@dataclass(frozen=True)
class PartitionState:
    """One partition as a region applied it."""

    partition: int
    next_offset: int
    heartbeat_ms: int | None


@dataclass(frozen=True)
class DeadLetters:
    """What a region's dead letters say about one seq: the members recorded with that seq,
    and where the records that named no readable seq were (partition, offset)."""

    seq: int
    exact: tuple[str, ...] = ()
    unreadable: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class RegionState:
    """A snapshot of one region's cache."""

    region: str
    reachable: bool
    ready: bool = False
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    partition_count: int = 0
    error: str | None = None
    bootstrap_loaded: int = 0
    bootstrap_total: int = 0
    apply_rate: float = 0.0
    complete: bool = True  # the epochs and partitions hashes hold their presence markers
    dead_letters: DeadLetters | None = None  # read when a seq was asked about

    def freshness_s(self, now_ms: int | None = None) -> float | None:
        """Age of the oldest partition heartbeat; None if any partition has none yet."""
        if not self.partition_count:
            return None
        beats = [
            p.heartbeat_ms
            for p in self.partitions.values()
            if p.partition < self.partition_count and p.heartbeat_ms is not None
        ]
        if len(beats) < self.partition_count:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now - min(beats)) / 1000)

    def has_applied(self, partition: int, offset: int) -> bool:
        """Whether the record at ``partition``/``offset`` is applied here."""
        state = self.partitions.get(partition)
        return state is not None and state.next_offset > offset

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "region": self.region,
            "reachable": self.reachable,
            "ready": self.ready,
            "freshness_s": self.freshness_s(),
            "partitions": {
                str(p.partition): {"next_offset": p.next_offset, "heartbeat_ms": p.heartbeat_ms}
                for p in sorted(self.partitions.values(), key=lambda s: s.partition)
            },
            "bootstrap": {"loaded": self.bootstrap_loaded, "total": self.bootstrap_total},
            "apply_rate": self.apply_rate,
            "complete": self.complete,
            "error": self.error,
        }


def _int(value: bytes | str | None, default: int = 0) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _queue(pipe: Any, keys: RedisKeys, seq: int | None) -> None:
    """The round trip's commands (one pipeline, sync or async)."""
    pipe.hgetall(keys.meta)
    pipe.hgetall(keys.partitions)
    pipe.hexists(keys.epochs, PRESENT_FIELD)
    if seq is not None:
        pipe.zrangebyscore(keys.dead_lettered, seq, seq, start=0, num=1)
        no_seq = DEAD_LETTER_NO_SEQ
        pipe.zrangebyscore(keys.dead_lettered, no_seq, no_seq)


def _state(region: str, replies: list[Any], seq: int | None) -> RegionState:
    meta_raw, parts_raw, epochs_present = replies[:3]
    meta = {_text(k): v for k, v in meta_raw.items()}
    parts: dict[int, dict[str, int]] = {}
    marker = False
    for raw_key, raw_value in parts_raw.items():
        name = _text(raw_key)
        marker = marker or name == PRESENT_FIELD
        field = PartitionField.parse(name)
        if field is not None:
            parts.setdefault(field[1], {})[field[0]] = _int(raw_value)
    partitions = {
        p: PartitionState(
            p, fields.get(PartitionField.OFFSET, 0), fields.get(PartitionField.HEARTBEAT)
        )
        for p, fields in parts.items()
    }
    rate = meta.get(MetaField.RATE)
    # a cache whose epochs or partitions hash was evicted or deleted is not ready, whatever
    # its meta says (validators answer unavailable; its worker rebuilds it)
    complete = bool(epochs_present) and marker
    dead_letters = None
    if seq is not None:
        exact, unknown = replies[3:5]
        unreadable = (parse_dead_letter_member(m) for m in unknown)
        dead_letters = DeadLetters(
            seq, tuple(_text(m) for m in exact), tuple(u for u in unreadable if u is not None)
        )
    ready = meta.get(MetaField.READY)
    return RegionState(
        region=region,
        reachable=True,
        ready=ready is not None and _text(ready) == MetaField.YES and complete,
        complete=complete,
        partitions=partitions,
        partition_count=_int(meta.get(MetaField.PARTITIONS)),
        bootstrap_loaded=_int(meta.get(MetaField.BOOT_LOADED)),
        bootstrap_total=_int(meta.get(MetaField.BOOT_TOTAL)),
        apply_rate=float(rate) if rate else 0.0,
        dead_letters=dead_letters,
    )


def read_region_state(
    client: redis.Redis, keys: RedisKeys, region: str, *, dead_letters_of: int | None = None
) -> RegionState:
    """Read a region's state in one round trip (with its dead letters about seq
    ``dead_letters_of``, if given); an unreachable Redis is a value, not an error."""
    try:
        with client.pipeline(transaction=False) as pipe:
            _queue(pipe, keys, dead_letters_of)
            replies = pipe.execute()
    except (redis.RedisError, OSError) as e:
        return RegionState(region=region, reachable=False, error=str(e))
    return _state(region, replies, dead_letters_of)


async def read_region_state_async(
    client: aioredis.Redis, keys: RedisKeys, region: str
) -> RegionState:
    """``read_region_state`` on an asyncio client (the worker's own progress)."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            _queue(pipe, keys, None)
            replies = await pipe.execute()
    except (aioredis.RedisError, OSError) as e:
        return RegionState(region=region, reachable=False, error=str(e))
    return _state(region, replies, None)


def count_tokens(client: redis.Redis, keys: RedisKeys, batch: int = 10_000) -> int:
    """How many token records the region holds (a SCAN; seconds for millions)."""
    total = 0
    for _ in client.scan_iter(match=keys.token("*"), count=batch):
        total += 1
    return total
