"""The signers registry in a region's Redis: which key ids each running worker verifies
with (``tokensync doctor`` reads it), refreshed every ``SIGNERS_REFRESH_S``."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from shared.keys import SIGNERS_FRESH_S, SignerField
from shared.logs import get_logger
from workers.cache import RegionCache

__all__ = ["forget", "record"]

log = get_logger(__name__)


async def record(cache: RegionCache, key_ids: Sequence[str], instance: str) -> None:
    """Record ``instance``'s key ids, and drop the entries of workers that stopped
    refreshing theirs."""
    client, key = cache.client, cache.keys.signers
    seconds, micros = await client.time()  # the region's clock, as doctor reads it
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    entry = json.dumps({SignerField.KEY_IDS: list(key_ids), SignerField.TIME: now_ms})
    await client.hset(key, instance, entry)
    stale = []
    for name, raw in (await client.hgetall(key)).items():
        try:
            seen = int(json.loads(raw).get(SignerField.TIME, 0))
        except (ValueError, TypeError, AttributeError):
            seen = 0
        if now_ms - seen > SIGNERS_FRESH_S * 1000 * 10:
            stale.append(name)
    if stale:
        await client.hdel(key, *stale)


async def forget(cache: RegionCache, instance: str) -> None:
    """Remove ``instance``'s entry (a clean stop); errors are only logged."""
    try:
        await cache.client.hdel(cache.keys.signers, instance)
    except aioredis.RedisError as e:
        log.warning("signers_forget_failed", error=str(e))
