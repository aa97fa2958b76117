"""A region's Redis cache from the worker's side: generations, bootstrap targets, apply.

The cache records, with the data, the offsets it applied (per partition), so a
worker resumes from Redis, not from Kafka's committed offsets. A generation is
one build of the cache from offset 0 of one stream (Kafka cluster id + topic, and
the topic's id, which a deleted and re-created topic changes):
a cache that was flushed, evicted, restarted empty, or built from another stream
is noticed and rebuilt from offset 0, after every key of the namespace it held
was deleted. A cache that went back in time (a restore from a backup, a lagging
replica) is noticed by the apply script, and the worker rewinds to its offsets; a cache
on another server than the one the worker applied to (a promoted replica, a restarted
primary: another replication id) may have gone back in time unnoticed by its offsets, so
it is reopened: not ready until it caught up with the topic's end offsets of then.

Longer than 350 lines: one concept, the worker's view of its region's Redis (claim,
generation, replication id, reopen, apply), each step one script call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared.errors import CacheUnavailableError, ConfigError
from shared.keys import PRESENT_FIELD, MetaField, PartitionField, RedisKeys
from shared.logs import get_logger
from workers.handlers import DEFAULT_TOMBSTONE_TTL_MS, PreparedBatch

__all__ = ["ApplyResult", "RegionCache", "StreamSource"]

log = get_logger(__name__)

# The scripts (each file says what it takes and returns; fields: ``shared.keys``).
_SCRIPT = files("workers").joinpath("apply.lua").read_text()
_CLAIM = files("workers").joinpath("claim.lua").read_text()  # claim a new generation
_OPEN = files("workers").joinpath("open.lua").read_text()  # open a claimed one
_BUILDING = files("workers").joinpath("build_progress.lua").read_text()  # purge progress
_REOPEN = files("workers").joinpath("reopen.lua").read_text()  # the server changed

# A build in progress counts its progress in meta.building; one that shows none for this
# long died, and the next worker takes over.
BUILD_STALL_S = 10.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class StreamSource:
    """The stream a cache is built from: a cache of another stream is never adopted."""

    cluster_id: str
    topic: str
    topic_id: str = ""  # Kafka's id of the topic's incarnation ("" = unknown)


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of one batch: records applied, stale (older or duplicate), ready flag;
    ``lost`` when the cache is not of the worker's generation any more (or incomplete);
    ``rewind`` (partition -> the cache's next offset) when the batch started past what the
    cache recorded and nothing was applied; ``server`` (its replication id) when the cache's
    server is not the one the worker applied to and nothing was applied."""

    applied: int
    stale: int
    ready: bool
    lost: bool = False
    rewind: dict[int, int] | None = None
    server: str | None = None


class RegionCache:
    """Async access to one region's Redis for the worker."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self._script: AsyncScript = client.register_script(_SCRIPT)
        self._claim: AsyncScript = client.register_script(_CLAIM)
        self._open: AsyncScript = client.register_script(_OPEN)
        self._building: AsyncScript = client.register_script(_BUILDING)
        self._reopen: AsyncScript = client.register_script(_REOPEN)
        self.generation = ""

    @classmethod
    def from_url(cls, url: str, keys: RedisKeys) -> RegionCache:
        """A cache on the Redis at ``url``."""
        return cls(aioredis.Redis.from_url(url, socket_timeout=5.0), keys)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def check_eviction_policy(self) -> str:
        """The server's ``maxmemory-policy``; ConfigError unless it is ``noeviction``.

        An evicting Redis may drop a tombstone or the epochs hash while the rest stays,
        which would turn revoked tokens valid again.
        """
        try:
            info = await self.client.info("memory")
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            raise ConfigError(
                f"the region's Redis has maxmemory-policy {policy}: a cache that may evict "
                "keys can forget revocations; set it to noeviction (CONFIG SET "
                "maxmemory-policy noeviction), or set TOKENSYNC_ALLOW_EVICTION=true"
            )
        return policy

    async def check_replication_id(self) -> str:
        """This server's replication id (``INFO replication`` ``master_replid``); ConfigError
        if the server refuses ``INFO`` (an ACL such as ``+@all -@dangerous``): the scripts
        could then neither record nor check it, and a promoted replica would go unnoticed.
        """
        try:
            info = await self.client.info("replication")
        except aioredis.ResponseError as e:  # NOPERM, a renamed or disabled command
            raise ConfigError(
                f"the region's Redis refused INFO ({e}); the Redis users of workers and "
                "validators need it (ACL +info) to notice a failover"
            ) from e
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
        replid = str(info.get("master_replid") or "")
        if not replid:
            raise ConfigError("the region's Redis names no master_replid in INFO replication")
        return replid

    async def check_not_shared(self, source: StreamSource, watch_s: float = 2.0) -> None:
        """ConfigError if a worker of another stream is applying to this namespace now (its
        heartbeats move within ``watch_s``): two deployments sharing a Redis namespace would
        rebuild each other's cache forever. A cache of another stream that nobody feeds any
        more (a re-created topic, a new Kafka cluster) is rebuilt by ``attach`` instead."""
        fields = [MetaField.CLUSTER, MetaField.TOPIC, MetaField.OLDEST_HEARTBEAT, MetaField.APPLIED]
        try:
            first = await self.client.hmget(self.keys.meta, fields)
            cluster, topic = (_text(v) if v is not None else None for v in first[:2])
            if cluster is None or topic is None:
                return
            if (cluster, topic) == (source.cluster_id, source.topic):
                return
            await asyncio.sleep(watch_s)
            second = await self.client.hmget(self.keys.meta, fields)
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
        if first[:2] == second[:2] and first[2:] != second[2:]:
            raise ConfigError(
                f"namespace {self.keys.namespace!r} of this Redis is in use by the worker of "
                f"cluster {cluster} topic {topic}, not {source.cluster_id} topic "
                f"{source.topic}: give this region its own Redis or TOKENSYNC_REDIS_NAMESPACE"
            )

    async def attach(
        self,
        partition_count: int,
        end_offsets: dict[int, int],
        source: StreamSource | None = None,
        current_ends: Callable[[], Awaitable[dict[int, int]]] | None = None,
    ) -> bool:
        """Adopt the cache's generation, or start a new one (bootstrap); True if new.

        A cache is adopted only if it is complete (its presence markers exist) and, when
        ``source`` is given, was built from that stream. A new generation drops every key
        of the namespace, loads from offset 0, sets the bootstrap targets (the topic's end
        offsets now) and is not ready until every partition caught up with them.
        ``current_ends`` (the topic's end offsets, asked after the cache was read) also
        refuses a cache that applied more than the topic holds: the topic was re-created.
        """
        try:
            return await self._attach(partition_count, end_offsets, source, current_ends)
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e

    async def _attach(
        self,
        partition_count: int,
        end_offsets: dict[int, int],
        source: StreamSource | None,
        current_ends: Callable[[], Awaitable[dict[int, int]]] | None,
    ) -> bool:
        build_seen: tuple[str, str] | None = None  # (generation, progress) last seen
        build_seen_at = time.monotonic()
        while True:
            meta, marker, epochs_present, applied = await self._read_identity()
            if current_ends is not None:
                end_offsets = await current_ends()  # after the cache's offsets were read
            beyond = (
                sorted(p for p, o in applied.items() if o > end_offsets.get(p, o))
                if current_ends is not None
                else []
            )
            current = meta.get(MetaField.GENERATION, "")
            building = meta.get(MetaField.BUILDING)
            if current and building is not None:
                # another worker of this region is clearing the namespace: wait while it
                # makes progress, and take over once it shows none (it died doing so)
                if build_seen != (current, building):
                    build_seen, build_seen_at = (current, building), time.monotonic()
                if time.monotonic() - build_seen_at < BUILD_STALL_S:
                    await asyncio.sleep(0.2)
                    continue
                why = "an earlier rebuild stopped making progress"
            else:
                refusal = self._refusal(meta, marker and epochs_present, beyond, source)
                if refusal is None:
                    self.generation = current
                    if int(meta.get(MetaField.PARTITIONS) or 0) < partition_count:
                        await self.client.hset(
                            self.keys.meta, MetaField.PARTITIONS, partition_count
                        )
                    if source is not None and source.topic_id and not meta.get(MetaField.TOPIC_ID):
                        # a cache built before topic ids were recorded (or while the
                        # broker gave none): bound to this incarnation from now on
                        await self.client.hset(self.keys.meta, MetaField.TOPIC_ID, source.topic_id)
                        log.warning("cache_bound_to_topic_id", topic_id=source.topic_id)
                    return False
                why = refusal
            generation = uuid.uuid4().hex
            claimed = await self._claim(
                keys=[self.keys.meta, self.keys.partitions, self.keys.epochs],
                args=[
                    current,
                    generation,
                    source.cluster_id if source else "",
                    source.topic if source else "",
                    partition_count,
                    source.topic_id if source else "",
                ],
            )
            if not claimed:
                continue  # someone else changed it meanwhile: look again
            log.warning("generation_started", generation=generation, previous=current, why=why)
            await self._purge(generation)
            targets: list[int] = []
            for p in range(partition_count):
                targets += [p, end_offsets.get(p, 0)]
            await self._open(
                keys=[self.keys.meta, self.keys.partitions, self.keys.epochs],
                args=[generation, *targets],
            )
            self.generation = generation
            return True

    @staticmethod
    def _refusal(
        meta: dict[str, str], complete: bool, beyond: list[int], source: StreamSource | None
    ) -> str | None:
        """Why the cache described by ``meta`` may not be adopted; None if it may."""
        if not meta.get(MetaField.GENERATION):
            return "no generation"
        if not complete:
            return "a structure of the cache is missing (evicted or deleted)"
        cluster, topic = meta.get(MetaField.CLUSTER), meta.get(MetaField.TOPIC)
        if source is not None and (cluster != source.cluster_id or topic != source.topic):
            return (
                f"built from cluster {cluster!r} topic {topic!r},"
                f" not cluster {source.cluster_id!r} topic {source.topic!r}"
            )
        recorded = meta.get(MetaField.TOPIC_ID, "")
        if source is not None and source.topic_id and recorded and recorded != source.topic_id:
            return f"built from topic id {recorded}, not {source.topic_id} (re-created)"
        if beyond:
            return f"it applied more of partitions {beyond} than the topic holds (re-created)"
        return None

    async def _read_identity(self) -> tuple[dict[str, str], bool, bool, dict[int, int]]:
        """Meta, whether both presence markers exist, and the applied next offsets."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.meta)
            pipe.hgetall(self.keys.partitions)
            pipe.hexists(self.keys.epochs, PRESENT_FIELD)
            raw, parts_raw, present = await pipe.execute()
        meta = {_text(k): _text(v) for k, v in raw.items()}
        parts = {_text(k): _text(v) for k, v in parts_raw.items()}
        applied = {
            field[1]: int(value)
            for name, value in parts.items()
            if (field := PartitionField.parse(name)) is not None
            and field[0] == PartitionField.OFFSET
            and value.isdigit()
        }
        return meta, PRESENT_FIELD in parts, bool(present), applied

    async def _purge(self, generation: str) -> None:
        """Delete every token and id key of the namespace (what a new generation rebuilds),
        counting progress in meta.building so that other workers wait instead of taking over.
        """
        keep = {
            self.keys.meta,
            self.keys.partitions,
            self.keys.epochs,
            self.keys.usage,
            self.keys.signers,  # which workers verify with which keys: not cache content
            # the near-caches that receipts must wait for: processes, not cache content (a
            # purged registration let a receipt say enforced while one still answered valid)
            self.keys.near_caches,
        }
        batch: list[bytes | str] = []
        deleted = 0
        async for key in self.client.scan_iter(match=self.keys.pattern, count=5000):
            if _text(key) not in keep:
                batch.append(key)
            if len(batch) >= 1000:
                await self.client.unlink(*batch)
                deleted += len(batch)
                batch = []
                await self._progress(generation, deleted)
        if batch:
            await self.client.unlink(*batch)

    async def _progress(self, generation: str, deleted: int) -> None:
        await self._building(keys=[self.keys.meta], args=[generation, deleted])

    async def resume_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The next offset to read per partition, as this cache recorded it (0 if none)."""
        try:
            fields = [PartitionField.offset(p) for p in partitions]
            values = await self.client.hmget(self.keys.partitions, fields)
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
        if result[0] == -2:
            return ApplyResult(0, 0, False, rewind={int(result[1]): int(result[2])})
        if result[0] == -3:
            return ApplyResult(0, 0, False, server=_text(result[1]))
        return ApplyResult(int(result[0]), int(result[1]), bool(result[2]))

    async def reopen(self, server: str, targets: dict[int, int]) -> bool:
        """Bind the cache to ``server`` (a replication id), not ready until every partition
        reached ``targets`` (the topic's end offsets now); False if its generation changed."""
        args: list[str | int] = [self.generation, server, self.keys.invalidations]
        for partition, target in sorted(targets.items()):
            args += [partition, target]
        try:
            return bool(await self._reopen(keys=[self.keys.meta, self.keys.partitions], args=args))
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e

    async def set_rate(self, rate: float) -> None:
        """Publish the recent apply rate (records/s) for ``region status``."""
        try:
            await self.client.hset(self.keys.meta, MetaField.RATE, f"{rate:.1f}")
        except aioredis.RedisError as e:
            raise CacheUnavailableError(f"region cache unreachable: {e}") from e
