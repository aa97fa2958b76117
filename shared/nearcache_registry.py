"""The region's register of near-caches, for receipts: what each near-cache reports in
``RedisKeys.near_caches`` (``NearCacheField``), and what a receipt asks of them.

Receipts (``near_caches_behind``): each near-cache registers in the region's
``near_caches`` hash and reports there the Redis time of the newest ping it has
processed (its own, or a ``sync`` ping a receipt publishes). A revocation
applied in the region before Redis time R is enforced in every near-cache
once each registered one reported a time >= R, or Redis time passed R + its
bound (after that, a cache answers only from pings sent after R).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import orjson
import redis

from shared.keys import NearCacheField, PingKind, RedisKeys

__all__ = [
    "FORGET_AFTER_MS",
    "PING_SCRIPT",
    "near_caches_behind",
    "redis_time_ms",
    "registration",
    "report",
    "sync_near_caches",
]

#: The ping script (fields: ``PingField``; see ``shared/ping.lua``): near-caches send their
#: own pings with it, receipts their ``sync`` requests.
PING_SCRIPT = files("shared").joinpath("ping.lua").read_text()

#: Receipts forget a registration once its last report is older than its own bound plus
#: this margin: by then the near-cache cannot be answering from anything it held at that
#: report (it answers only from a ping sent less than ``bound`` ago, and stops answering
#: once its newest *reported* ping is older than its bound plus a third of this margin,
#: so the remaining two thirds absorb clock-rate differences).
FORGET_AFTER_MS = 30_000


def registration(now_ms: int, bound_ms: int) -> bytes:
    """A near-cache's entry when it registers (Redis time ``now_ms``), before any answer."""
    return orjson.dumps(
        {NearCacheField.REPORTED: 0, NearCacheField.SINCE: now_ms, NearCacheField.BOUND: bound_ms}
    )


def report(processed_ms: int, bound_ms: int) -> bytes:
    """A near-cache's entry once it processed every ping up to Redis time ``processed_ms``."""
    return orjson.dumps({NearCacheField.REPORTED: processed_ms, NearCacheField.BOUND: bound_ms})


def redis_time_ms(client: redis.Redis) -> int:
    """The Redis server's clock in milliseconds (receipts and near-caches share it)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def sync_near_caches(client: redis.Redis, keys: RedisKeys) -> int:
    """Ask every listening near-cache of the region to report at once; returns the Redis
    time of the request (>= any moment before the call)."""
    script = client.register_script(PING_SCRIPT)
    return int(
        script(
            keys=[keys.meta, keys.epochs, keys.partitions],
            args=[keys.invalidations, PingKind.SYNC, "", 0],
        )
    )


def near_caches_behind(client: redis.Redis, keys: RedisKeys, since_ms: int) -> list[str]:
    """The near-caches that may still answer from state older than Redis time
    ``since_ms``: registered, reported less than ``since_ms``, and ``since_ms`` + their
    bound not yet passed. Empty means: whatever the region applied before ``since_ms`` is
    enforced in every near-cache. Forgets a registration whose last report is older than
    its own bound plus ``FORGET_AFTER_MS`` (it stalled or stopped; it can no longer be
    answering from what it held then)."""
    now = redis_time_ms(client)
    behind, forget = [], []
    for raw_id, raw in client.hgetall(keys.near_caches).items():
        cache_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        try:
            report: dict[str, Any] = orjson.loads(raw)
            reported = int(report[NearCacheField.REPORTED])
            bound = int(report[NearCacheField.BOUND])
            seen = int(report.get(NearCacheField.SINCE, reported))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            forget.append(cache_id)
            continue
        if max(reported, seen) < now - bound - FORGET_AFTER_MS:
            forget.append(cache_id)
        elif reported < since_ms and now < since_ms + bound:
            behind.append(cache_id)
    if forget:
        client.hdel(keys.near_caches, *forget)
    return sorted(behind)
