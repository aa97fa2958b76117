"""One region's worker: the state its app's hooks share, and what they do with a batch.

Where to read from comes from Redis, not from Kafka: on every assignment the worker
seeks to the offsets its cache recorded, so a lost cache rewinds to 0, and a cache that
went back in time (it refuses a batch that starts past its offsets) is read again from
its offsets. A cache lost while running stops the app and asks for a restart
(``rebuild``). Each batch is verified (``workers.handlers``), refused records go to the
dead-letter topic, the rest are applied with one Lua call (``workers.cache``).

Over 350 lines: one class, the state the app's hooks share (assignment, seek, prepare,
apply, reopen after a failover, dead letters); faust's wiring is ``workers.app``, its
internals ``workers.internals``, the logic ``workers.handlers``, Redis ``workers.cache``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from shared import tracing
from shared.errors import CacheUnavailableError
from shared.events import Keyring
from shared.kafka_client import KafkaClientConfig
from shared.keys import Topics
from shared.logs import get_logger
from shared.metrics import (
    APPLY_BATCH_SECONDS,
    APPLY_RECORDS,
    DEAD_LETTERS,
    REGION_FRESHNESS,
    REGION_LAG,
)
from shared.settings import Region
from workers import internals, signers
from workers.cache import RegionCache, StreamSource
from workers.drain import Applied, BatchDrain
from workers.fencing import FenceLog
from workers.handlers import (
    DeadLetter,
    PreparedBatch,
    Record,
    SealGate,
    prepare_batch,
    prepare_sealed_batch,
)
from workers.progress import BootstrapProgress
from workers.source import stream_source

__all__ = ["RegionWorker", "WorkerOptions"]

log = get_logger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """Tuning of one region worker."""

    batch_size: int = 5000
    session_timeout_s: float = 6.0
    tombstone_ttl_s: float = 30 * 24 * 3600
    usage_interval_s: float = 15.0
    progress: bool = True
    allow_eviction: bool = False
    metadata_max_age_ms: int = 5000  # how soon partitions added to the topic are noticed
    shared_watch_s: float = 2.0  # how long to watch a cache of another stream for activity
    # heartbeats stamped further ahead of this worker's clock are not applied
    clock_skew_allowance_s: float = 1.0


@dataclass
class RegionWorker:
    """One region's app and the state its agent shares with the command that runs it."""

    app: faust.App
    region: Region
    topics: Topics
    cache: RegionCache
    keyring: Keyring
    partitions: int
    options: WorkerOptions
    dead_letter_topic: Any = None
    drain: BatchDrain | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    rebuild: bool = False
    progress: BootstrapProgress | None = None
    _attach_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _rate_window: list[tuple[float, int]] = field(default_factory=list)
    _partitions_seen: int = 0
    source: StreamSource | None = None  # set by check_cache, before the app starts
    instance: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    kafka_bootstrap: str = ""  # set by check_cache
    kafka_client: KafkaClientConfig = field(default_factory=KafkaClientConfig)
    fences: FenceLog = field(default_factory=FenceLog)  # relay fencing epochs by offset
    gate: SealGate | None = None  # signing modes both and sealed: records wait for a seal

    def _tps(self, count: int) -> list[TP]:
        return [TP(self.topics.tokens, p) for p in range(count)]

    async def check_cache(self, kafka_bootstrap: str) -> None:
        """Before joining the group: learn the stream (Kafka cluster id + topic) the cache
        must belong to, and refuse (ConfigError) a Redis that may evict keys, unless the
        settings allow it, or a namespace that another stream's worker is applying to."""
        if self.options.allow_eviction:
            log.warning("eviction_allowed", region=self.region.name)
        else:
            await self.cache.check_eviction_policy()
        await self.cache.check_replication_id()  # the failover check needs INFO
        self.kafka_bootstrap = kafka_bootstrap
        await self.record_signers()
        self.source = await stream_source(
            kafka_bootstrap, self.topics.tokens, client=self.kafka_client
        )
        await self.cache.check_not_shared(self.source, self.options.shared_watch_s)

    async def record_signers(self) -> None:
        """Record the key ids this worker verifies with (``workers.signers``)."""
        await signers.record(self.cache, self.keyring.ids, self.instance)

    def remove_data_dir(self) -> None:
        """Remove faust's (temporary) data directory; call once the app stopped."""
        shutil.rmtree(self.app.conf.datadir, ignore_errors=True)

    async def forget_signers(self) -> None:
        """Remove this worker's entry (a clean stop); errors are only logged."""
        await signers.forget(self.cache, self.instance)

    async def _ensure_attached(self) -> None:
        """Adopt the cache's generation or start a new one (bootstrap), once per process."""
        async with self._attach_lock:
            if self.cache.generation:
                return
            count = self.app.consumer.topic_partitions(self.topics.tokens) or self.partitions

            async def current_ends() -> dict[int, int]:
                ends = await self.app.consumer.highwaters(*self._tps(count))
                return {tp.partition: int(o) for tp, o in ends.items()}

            source = self.source
            if source is not None and not source.topic_id and self.kafka_bootstrap:
                # the topic may not have existed before the app created it: its id now
                source = self.source = await stream_source(
                    self.kafka_bootstrap, source.topic, client=self.kafka_client
                )
                if not source.topic_id:
                    log.warning(
                        "kafka_topic_id_unknown",
                        topic=source.topic,
                        note="the broker gives no topic id (metadata v12): a re-created "
                        "topic is noticed only once a region applied more than it holds",
                    )
            end_offsets = await current_ends()
            if await self.cache.attach(count, end_offsets, source, current_ends):
                log.info(
                    "bootstrap_started",
                    partitions=count,
                    records=sum(end_offsets.values()),
                    cluster=source.cluster_id if source else None,
                    topic=self.topics.tokens,
                )
            if self.options.progress and self.progress is None:
                self.progress = BootstrapProgress(self.region.name, self.cache)
                self.progress.start()

    def install_hooks(self) -> None:
        """Install the batch drain and the resume-from-cache seek; call once the app is
        bound to the running loop, before it starts."""
        if self.drain is not None:
            internals.FaustFetches(self.app, self.topics.tokens).install_drain(self.drain.run)
        self._install_resume_from_cache()

    def _install_resume_from_cache(self) -> None:
        """Make faust position assigned partitions at the offsets the cache recorded.

        faust seeks to Kafka's committed offsets after every rebalance; a lost cache must
        instead be rebuilt from 0, so the seek is redirected to what Redis says was applied.
        Call once the app is bound to the running loop.
        """
        consumer = self.app.consumer

        async def seek_to_cache(
            seek_to_committed: Callable[[], Awaitable[Mapping[TP, int]]],
        ) -> dict[TP, int]:
            committed: dict[TP, int] = dict(await seek_to_committed())
            mine = sorted(
                (tp for tp in consumer.assignment() if tp.topic == self.topics.tokens),
                key=lambda tp: tp.partition,
            )
            if mine:
                await self._ensure_attached()
                offsets = await self.cache.resume_offsets([tp.partition for tp in mine])
                positions = {tp: offsets[tp.partition] for tp in mine}
                await internals.seek_wait(self.app, positions)
                if self.gate is not None:
                    self.gate.reset()  # what waited is read again
                if self.drain is not None:
                    self.drain.expect(offsets)
                committed.update(positions)
                log.info(
                    "partitions_positioned",
                    generation=self.cache.generation,
                    offsets={tp.partition: o for tp, o in positions.items()},
                )
            return committed

        internals.redirect_seek(self.app, seek_to_cache)

    async def on_assigned(self, assigned: set[TP]) -> None:
        """Attach to the cache and record its offsets as the group's committed ones."""
        await self._ensure_attached()
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.topics.tokens)
        if not mine:
            return
        offsets = await self.cache.resume_offsets(mine)
        await internals.commit(self.app, {TP(self.topics.tokens, p): o for p, o in offsets.items()})
        log.info(
            "partitions_assigned",
            partitions=mine,
            resume_offsets=offsets,
            generation=self.cache.generation,
        )

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Publish refused records (with the reason) and wait for the broker's ack."""
        for letter in letters:
            record = letter.record
            headers = [
                *[(k, v) for k, v in record.headers],
                ("ts-dlq-reason", letter.reason.encode()),
                ("ts-dlq-detail", letter.detail[:500].encode()),
                ("ts-dlq-region", self.region.name.encode()),
                (
                    "ts-dlq-source",
                    f"{self.topics.tokens}:{record.partition}:{record.offset}".encode(),
                ),
            ]
            pending = await self.dead_letter_topic.send(
                key=record.key, value=record.value or b"", headers=headers
            )
            await pending
            DEAD_LETTERS.labels(self.region.name, letter.reason).inc()
            log.warning(
                "event_denied" if letter.applied_as_denial else "event_dead_lettered",
                reason=letter.reason,
                detail=letter.detail,
                partition=record.partition,
                offset=record.offset,
            )

    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Verify and decode one fetch (no I/O)."""
        until_ms = int(time.time() * 1000 + self.options.clock_skew_allowance_s * 1000)
        fetched = tracing.batch_fetched(records)  # None unless tracing or stage timing
        keys = self.cache.keys
        if self.gate is not None:
            batch = prepare_sealed_batch(
                records, self.gate, keys, beats_until_ms=until_ms, fences=self.fences
            )
        else:
            batch = prepare_batch(
                records, self.keyring, keys, beats_until_ms=until_ms, fences=self.fences
            )
        batch.stages = tracing.batch_verified(fetched)
        return batch

    def waiting(self) -> bool:
        """Records wait for a seal (an empty fetch still ends the waits that are over)."""
        return self.gate is not None and self.gate.waiting > 0

    async def rewind(self) -> dict[int, int]:
        """Position the assigned partitions at the offsets the cache recorded (it went back
        in time) and return them."""
        mine = sorted(
            (tp for tp in self.app.consumer.assignment() if tp.topic == self.topics.tokens),
            key=lambda tp: tp.partition,
        )
        offsets = await self.cache.resume_offsets([tp.partition for tp in mine])
        await internals.seek_wait(self.app, {tp: offsets[tp.partition] for tp in mine})
        if self.gate is not None:
            self.gate.reset()  # what waited is read again
        log.warning("cache_rewound", generation=self.cache.generation, offsets=offsets)
        return offsets

    async def apply(self, batch: PreparedBatch, now_ms: int) -> Applied:
        """Dead-letter the refused records, apply the rest; STOP once the cache was lost,
        REWIND when it no longer holds what this worker applied (nothing was applied).

        Raises CacheUnavailableError when Redis does not answer (nothing was applied).
        """
        started = time.perf_counter()
        tracing.apply_started(batch.stages)
        if batch.dead_letters:  # on the topic (for people) before the offsets move on
            await self.send_dead_letters(batch.dead_letters)
        result = await self.cache.apply(batch, now_ms, int(self.options.tombstone_ttl_s * 1000))
        if result.lost:
            # The rebuilt worker resumes from the offsets its new cache records (0).
            log.warning("cache_lost", generation=self.cache.generation)
            self.rebuild = True
            self.done.set()
            return Applied.STOP
        if result.server is not None:
            return await self._reopen(result.server)
        if batch.partition_count > self._partitions_seen:
            if self._partitions_seen:
                log.warning(
                    "partitions_added",
                    before=self._partitions_seen,
                    after=batch.partition_count,
                    note="the region is unavailable until every partition has a heartbeat",
                )
            self._partitions_seen = batch.partition_count
        if result.rewind is not None:
            log.warning(
                "cache_behind_worker",
                generation=self.cache.generation,
                batch_starts=batch.starts,
                cache_offsets=result.rewind,
            )
            return Applied.REWIND
        await tracing.batch_applied(
            self.cache.client, self.cache.keys, batch.stages, self.region.name
        )
        elapsed = time.perf_counter() - started
        if batch.ahead:
            APPLY_RECORDS.labels(self.region.name, "heartbeat_ahead").inc(len(batch.ahead))
            log.warning(
                "heartbeat_ahead_ignored",
                count=len(batch.ahead),
                partitions=sorted({p for p, _ in batch.ahead}),
                ahead_ms=max(at for _, at in batch.ahead) - now_ms,
                note="stamped ahead of this worker's clock beyond the skew allowance",
            )
        self._observe(batch, now_ms)
        APPLY_BATCH_SECONDS.labels(self.region.name).observe(elapsed)
        APPLY_RECORDS.labels(self.region.name, "applied").inc(result.applied)
        APPLY_RECORDS.labels(self.region.name, "stale").inc(result.stale)
        total = batch.records + batch.heartbeats + len(batch.dead_letters)
        await self._track_rate(total)
        # the worker's canonical line: one per batch (at debug when it held only heartbeats)
        emit = log.info if batch.records or batch.dead_letters else log.debug
        emit(
            "batch_applied",
            offsets={p: [batch.starts.get(p), o] for p, o in sorted(batch.next_offsets.items())},
            records=total,
            applied=result.applied,
            stale=result.stale,
            heartbeats=batch.heartbeats,
            dead_letters=len(batch.dead_letters),
            ready=result.ready,
            duration_ms=round(elapsed * 1000, 2),
        )
        return Applied.APPLIED

    async def _reopen(self, server: str) -> Applied:
        """The cache is on another server than the one this worker applied to (a promoted
        replica, a restarted primary): it may miss what was applied and committed. Not ready
        (validators answer unavailable) until it caught up with the topic's end now, then read
        again from the offsets it holds."""
        count = self.app.consumer.topic_partitions(self.topics.tokens) or self.partitions
        try:
            ends = await self.app.consumer.highwaters(*self._tps(count))
        except Exception as e:  # the broker did not answer: the batch is retried
            raise CacheUnavailableError(f"the topic's end offsets: {e}") from e
        targets = {tp.partition: int(o) for tp, o in ends.items()}
        if not await self.cache.reopen(server, targets):
            log.warning("cache_lost", generation=self.cache.generation)
            self.rebuild = True
            self.done.set()
            return Applied.STOP
        log.warning(
            "cache_server_changed",
            generation=self.cache.generation,
            server=server,
            targets=targets,
            note="not ready until caught up: a promoted replica may miss applied records",
        )
        return Applied.REWIND

    def _observe(self, batch: PreparedBatch, now_ms: int) -> None:
        """Lag (records behind the partitions' ends) and freshness (age of the heartbeats)."""
        assigned = self.app.consumer.assignment()
        lag = 0
        for partition, next_offset in batch.next_offsets.items():
            tp = TP(self.topics.tokens, partition)
            highwater = self.app.consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:  # unknown until the first fetch returned
                lag += max(0, int(highwater) - next_offset)
        REGION_LAG.labels(self.region.name).set(lag)
        if batch.beats:
            REGION_FRESHNESS.labels(self.region.name).set(
                max(0, now_ms - min(batch.beats.values())) / 1000
            )

    async def _track_rate(self, count: int) -> None:
        now = time.monotonic()
        self._rate_window.append((now, count))
        while self._rate_window and now - self._rate_window[0][0] > 5:
            self._rate_window.pop(0)
        if len(self._rate_window) > 1 and int(now) != int(self._rate_window[-2][0]):
            span = max(now - self._rate_window[0][0], 1e-3)
            await self.cache.set_rate(sum(c for _, c in self._rate_window) / span)
