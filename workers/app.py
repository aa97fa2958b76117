"""The faust-streaming app of one region, built by ``build_app`` (no module-level app).

faust keeps the group membership, rebalances, timers and producing; records reach the
worker a whole fetch at a time (``workers.drain``, installed through
``workers.internals``, the only module that touches faust's internals) and are handled
by the ``RegionWorker`` (``workers.worker``); the stream source is ``workers.source``.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, cast

import faust
import redis.asyncio as aioredis
from faust.types import TP

from shared.errors import CacheUnavailableError
from shared.events import Keyring
from shared.keys import SIGNERS_REFRESH_S, RedisKeys, Topics, consumer_group
from shared.logs import get_logger
from shared.region_keys import usage_signer
from shared.seal_keys import verifier_from
from shared.settings import Region, Settings
from shared.usage import DRAIN_SCRIPT, encode_usage_reports, parse_drained_detail
from workers.cache import RegionCache
from workers.drain import BatchDrain
from workers.handlers import SealGate
from workers.source import stream_source
from workers.worker import RegionWorker, WorkerOptions

__all__ = ["RegionWorker", "WorkerOptions", "build_app", "stream_source"]

log = get_logger(__name__)


def _raw_topic(app: faust.App, name: str, **options: Any) -> Any:
    """A topic of bytes keys and values, read and written exactly as they are (signed)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **options,
    )


def build_app(
    settings: Settings,
    region: Region,
    keyring: Keyring,
    options: WorkerOptions | None = None,
) -> RegionWorker:
    """The faust app and agent of ``region``; consumer group ``tokensync-<region>``.

    Only settings faust still reads are passed: records bypass faust's streams (the batch
    drain reads fetches itself), so the commit cadence (``broker_commit_every``/
    ``_interval``) and stream buffers are not set; the drain commits what Redis applied.
    """
    options = options or WorkerOptions()
    topics = Topics(settings.topic_prefix)
    group = consumer_group(region.name, settings.topic_prefix)
    app = faust.App(
        group,
        # faust creates a data directory on start ("<id>-data" in the working directory
        # by default); tables are in memory, so a temporary one, removed at exit (cleanup)
        datadir=tempfile.mkdtemp(prefix=f"{group}-faust-"),
        broker=f"kafka://{settings.kafka_bootstrap}",
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=options.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_max_poll_records=options.batch_size,  # the largest batch the drain reads
        consumer_metadata_max_age_ms=options.metadata_max_age_ms,
        consumer_max_fetch_size=8 << 20,
        producer_acks=-1,
        stream_wait_empty=False,
        **settings.kafka_client.faust_kwargs(),
    )
    tokens = _raw_topic(app, topics.tokens, partitions=settings.partitions, compacting=True)
    cache = RegionCache.from_url(region.redis_url, RedisKeys(settings.redis_namespace))
    worker = RegionWorker(app, region, topics, cache, keyring, settings.partitions, options)
    worker.kafka_client = settings.kafka_client
    if settings.signing_mode != "hmac":
        worker.gate = SealGate(
            verifier_from(settings),
            topics.tokens,
            wait_s=settings.seal_wait_s,
            hmac=keyring if settings.signing_mode == "both" else None,
            region=region.name,
        )
    worker.dead_letter_topic = _raw_topic(app, topics.dead_letters)

    async def _assigned(sender: Any, assigned: set[TP], **_kwargs: Any) -> None:
        try:
            await worker.on_assigned(assigned)
        except CacheUnavailableError as e:
            log.error("cache_unavailable_on_assignment", error=str(e))
            worker.done.set()

    app.on_partitions_assigned.connect(cast(Any, _assigned))

    usage_topic = _raw_topic(app, topics.usage, partitions=settings.partitions)
    drain = cache.client.register_script(DRAIN_SCRIPT)
    signer = usage_signer(keyring, region.name, settings.region_key, settings.region_keys)
    log.info("usage_signing", region=region.name, own_key=signer is not keyring)

    async def forward_usage() -> None:
        """Move what validators flushed (token id -> newest use, presentation counts) to the
        usage topic, signed with the keyring like the token stream and with the region's
        own key once it has one (``shared.region_keys``; the store drops what does not
        verify, and what claims another region than its key's)."""
        try:
            drained = await drain(keys=[cache.keys.usage, cache.keys.usage_counts])
            usage, counts, invalid = parse_drained_detail(drained)
        except aioredis.RedisError as e:
            log.warning("usage_drain_failed", error=str(e))
            return
        if usage or counts or invalid:
            now_ms = int(time.time() * 1000)
            for key, value, headers in encode_usage_reports(
                region.name, usage, now_ms, signer, tokens=counts, invalid=invalid
            ):
                await (await usage_topic.send(key=key, value=value, headers=headers))
            log.info(
                "usage_forwarded", tokens=len(usage), counted=len(counts), invalid=len(invalid)
            )

    app.timer(interval=options.usage_interval_s)(forward_usage)

    async def refresh_signers() -> None:
        try:
            await worker.record_signers()
        except aioredis.RedisError as e:
            log.warning("signers_refresh_failed", error=str(e))

    app.timer(interval=SIGNERS_REFRESH_S)(refresh_signers)

    async def subscribe_only(stream: faust.Stream[Any]) -> None:
        """Keeps the topic subscribed; records bypass it through ``workers.drain``."""
        async for _event in stream:
            raise RuntimeError("a record reached the agent: the batch drain is not installed")

    app.agent(tokens, name=f"apply-{region.name}")(cast(Any, subscribe_only))
    worker.drain = BatchDrain(
        worker.prepare, worker.apply, worker.done, rewind=worker.rewind, idle=worker.waiting
    )
    return worker
