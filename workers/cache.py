"""A region's Redis cache from the worker's side: generations, bootstrap targets, apply.

The cache records, with the data, the offsets it applied (per partition), so a
worker resumes from Redis, not from Kafka's committed offsets: a cache that
was flushed or restarted empty is noticed (its generation is gone) and rebuilt
from offset 0.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared.errors import CacheUnavailableError
from shared.keys import RedisKeys
from workers.handlers import DEFAULT_TOMBSTONE_TTL_MS, PreparedBatch

__all__ = ["ApplyResult", "RegionCache"]

_SCRIPT = files("workers").joinpath("apply.lua").read_text()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of one batch: records applied, stale (older or duplicate), ready flag,
    or ``lost`` when the cache is not of the worker's generation any more."""

    applied: int
    stale: int
    ready: bool
    lost: bool = False


class RegionCache:
    """Async access to one region's Redis for the worker."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self._script: AsyncScript = client.register_script(_SCRIPT)
        self.generation = ""

    @classmethod
    def from_url(cls, url: str, keys: RedisKeys) -> RegionCache:
        """A cache on the Redis at ``url``."""
        return cls(aioredis.Redis.from_url(url, socket_timeout=5.0), keys)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def attach(self, partition_count: int, end_offsets: dict[int, int]) -> bool:
        """Adopt the cache's generation, or start a new one (bootstrap); True if new.

        A new generation sets the bootstrap targets (the topic's end offsets now) and
        marks the region not ready until every partition caught up with them.
        """
        try:
            current = await self.client.hget(self.keys.meta, "generation")
            if current is not None:
                self.generation = _text(current)
                await self.client.hsetnx(self.keys.meta, "partitions", partition_count)
                return False
            generation = uuid.uuid4().hex
            if await self.client.hsetnx(self.keys.meta, "generation", generation):
                # redis-py's stub wants an invariant key union; the values are plain ints.
                mapping: Any = {f"t:{p}": end_offsets.get(p, 0) for p in range(partition_count)}
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.hset(self.keys.partitions, mapping=mapping)
                    pipe.hset(
                        self.keys.meta,
                        mapping={"partitions": partition_count, "ready": 0, "applied": 0},
                    )
                    await pipe.execute()
                self.generation = generation
                return True
            self.generation = _text(await self.client.hget(self.keys.meta, "generation") or b"")
            return False
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e

    async def resume_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The next offset to read per partition, as this cache recorded it (0 if none)."""
        try:
            values = await self.client.hmget(self.keys.partitions, [f"o:{p}" for p in partitions])
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
        return {p: int(v) if v is not None else 0 for p, v in zip(partitions, values, strict=True)}

    async def apply(
        self, batch: PreparedBatch, now_ms: int, tombstone_ttl_ms: int = DEFAULT_TOMBSTONE_TTL_MS
    ) -> ApplyResult:
        """Run the apply script once for the whole batch."""
        try:
            result = await self._script(
                keys=batch.keys,
                args=batch.script_args(self.generation, now_ms, self.keys, tombstone_ttl_ms),
            )
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"applying a batch failed: {e}") from e
        if result[0] == -1:
            return ApplyResult(0, 0, False, lost=True)
        return ApplyResult(int(result[0]), int(result[1]), bool(result[2]))

    async def set_rate(self, rate: float) -> None:
        """Publish the recent apply rate (records/s) for ``region status``."""
        try:
            await self.client.hset(self.keys.meta, "rate", f"{rate:.1f}")
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
