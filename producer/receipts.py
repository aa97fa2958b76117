"""Receipts: per region, when it had applied a given outbox seq.

A receipt is read from what regions applied, never from what was sent: the
relay recorded where the broker put the record (partition and offset), and a
region has enforced it once its applied offset in that partition passed it.
Elapsed times count from the record's commit in the store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from producer.store import TokenStore
from shared.keys import RedisKeys
from shared.settings import Region, Settings

__all__ = ["Receipt", "RegionReceipt", "all_regions", "wait_for_receipt"]


@dataclass(frozen=True)
class RegionReceipt:
    """One region's answer: enforced after ``after_ms`` since commit, or not (with why)."""

    region: str
    enforced: bool
    after_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Receipt:
    """Where seq ``seq`` stands in every region."""

    seq: int
    partition: int | None
    offset: int | None
    regions: tuple[RegionReceipt, ...]
    timeout_s: float

    @property
    def complete(self) -> bool:
        """Every region enforced it."""
        return bool(self.regions) and all(r.enforced for r in self.regions)

    def summary(self) -> str:
        """One line for people: 'enforced in 3/3 regions, slowest us after 38 ms'."""
        done = [r for r in self.regions if r.enforced]
        head = f"enforced in {len(done)}/{len(self.regions)} regions"
        if self.partition is None:
            return f"{head}: the relay did not publish seq {self.seq} within {self.timeout_s:g} s"
        if done:
            slowest = max(done, key=lambda r: r.after_ms or 0.0)
            head += f", slowest {slowest.region} after {slowest.after_ms or 0:.0f} ms"
        missing = [r for r in self.regions if not r.enforced]
        if missing:
            names = ", ".join(f"{r.region} ({r.error})" if r.error else r.region for r in missing)
            head += f"; not confirmed within {self.timeout_s:g} s: {names}"
        return head

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "partition": self.partition,
            "offset": self.offset,
            "complete": self.complete,
            "summary": self.summary(),
            "regions": [
                {
                    "region": r.region,
                    "enforced": r.enforced,
                    "after_ms": r.after_ms,
                    "error": r.error,
                }
                for r in self.regions
            ],
        }


def all_regions(settings: Settings, store: TokenStore) -> list[Region]:
    """Regions from the settings and those registered in the store (settings win on names)."""
    named = {r.name: r for r in store.regions()}
    named.update({r.name: r for r in settings.regions})
    return [named[n] for n in sorted(named)]


def wait_for_receipt(
    settings: Settings,
    store: TokenStore,
    seq: int,
    *,
    regions: Sequence[Region] | None = None,
    timeout_s: float = 10.0,
    poll_s: float = 0.002,
) -> Receipt:
    """Block until every region applied ``seq`` or ``timeout_s`` passed; return the receipt."""
    deadline = time.monotonic() + timeout_s
    targets = list(regions) if regions is not None else all_regions(settings, store)
    position = store.position(seq)
    while position.offset is None and time.monotonic() < deadline:
        time.sleep(poll_s)
        position = store.position(seq)
    if position.partition is None or position.offset is None:
        return Receipt(
            seq, None, None, tuple(RegionReceipt(r.name, False) for r in targets), timeout_s
        )
    keys = RedisKeys(settings.redis_namespace)
    field = f"o:{position.partition}"
    clients = {r.name: redis.Redis.from_url(r.redis_url, socket_timeout=1.0) for r in targets}
    results: dict[str, RegionReceipt] = {}
    errors: dict[str, str] = {}
    try:
        while len(results) < len(targets):
            for name, client in clients.items():
                if name in results:
                    continue
                try:
                    raw = client.hget(keys.partitions, field)
                except redis.RedisError as e:
                    errors[name] = f"unreachable: {e}"
                    continue
                errors.pop(name, None)
                if raw is not None and int(raw) > position.offset:
                    elapsed = time.time() * 1000 - position.recorded_at_ms
                    results[name] = RegionReceipt(name, True, round(max(elapsed, 0.0), 1))
            if len(results) == len(targets) or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    finally:
        for client in clients.values():
            client.close()
    ordered = tuple(
        results.get(r.name) or RegionReceipt(r.name, False, error=errors.get(r.name))
        for r in targets
    )
    return Receipt(seq, position.partition, position.offset, ordered, timeout_s)
