"""What a region's Redis says about itself: ready, applied offsets, heartbeats, freshness.

Workers write this state (see ``workers.apply``); validators, receipts and
``tokensync region status`` read it. Field names live in ``shared.keys``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from shared.keys import PRESENT_FIELD, RedisKeys

__all__ = ["PartitionState", "RegionState", "count_tokens", "read_region_state"]


@dataclass(frozen=True)
class PartitionState:
    """One partition as a region applied it."""

    partition: int
    next_offset: int
    heartbeat_ms: int | None


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


def read_region_state(client: redis.Redis, keys: RedisKeys, region: str) -> RegionState:
    """Read a region's state in one round trip; an unreachable Redis is a value, not an error."""
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.meta)
            pipe.hgetall(keys.partitions)
            pipe.hexists(keys.epochs, PRESENT_FIELD)
            meta_raw, parts_raw, epochs_present = pipe.execute()
    except redis.RedisError as e:
        return RegionState(region=region, reachable=False, error=str(e))
    meta = {k.decode() if isinstance(k, bytes) else k: v for k, v in meta_raw.items()}
    parts: dict[int, dict[str, int]] = {}
    for raw_key, raw_value in parts_raw.items():
        name = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        kind, _, number = name.partition(":")
        if number.isdigit():
            parts.setdefault(int(number), {})[kind] = _int(raw_value)
    partitions = {
        p: PartitionState(p, fields.get("o", 0), fields.get("h")) for p, fields in parts.items()
    }
    rate = meta.get("rate")
    # a cache whose epochs or partitions hash was evicted or deleted is not ready, whatever
    # its meta says (validators answer unavailable; its worker rebuilds it)
    complete = bool(epochs_present) and any(
        k in (PRESENT_FIELD, PRESENT_FIELD.encode()) for k in parts_raw
    )
    return RegionState(
        region=region,
        reachable=True,
        ready=meta.get("ready") in (b"1", "1") and complete,
        complete=complete,
        partitions=partitions,
        partition_count=_int(meta.get("partitions")),
        bootstrap_loaded=_int(meta.get("boot_loaded")),
        bootstrap_total=_int(meta.get("boot_total")),
        apply_rate=float(rate) if rate else 0.0,
    )


def count_tokens(client: redis.Redis, keys: RedisKeys, batch: int = 10_000) -> int:
    """How many token records the region holds (a SCAN; seconds for millions)."""
    total = 0
    for _ in client.scan_iter(match=keys.token("*"), count=batch):
        total += 1
    return total
