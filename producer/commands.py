"""Command-line commands of the token authority's processes: ``relay``, ``api``, ``demo``,
``backfill`` (``token`` lives in ``producer.token_commands``; it is re-exported here for
the ``tokensync`` entry point that names ``producer.commands:token``).

Each prints one line per fact for people, or JSON with ``--json`` (errors too, see
``producer.cli_support``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from producer.audit import AuditContext
from producer.store import TokenStore
from producer.token_commands import token
from shared.cli import CliContext, emit, json_option, metrics_option, pass_cli, serve_metrics

if TYPE_CHECKING:
    from producer.publisher import EventPublisher
    from shared.keys import Topics
    from shared.settings import Settings

__all__ = ["api", "backfill", "demo", "relay", "token"]


@click.command(
    epilog="\b\nExamples:\n  tokensync relay\n  tokensync relay --metrics-port 9101"
    "\n  tokensync relay --lease-ttl 3",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(0.3, 600),
    default=3.0,
    show_default=True,
    help="Seconds the relay lease lasts without renewal (renewed every third of it): how "
    "soon a standby relay takes over from one that died or hangs.",
)
@metrics_option
@json_option
@pass_cli
def relay(cli: CliContext, *, lease_ttl: float, metrics_port: int | None, as_json: bool) -> None:
    """Publish the outbox to Kafka (signed, acks=all, in seq order) and send heartbeats;
    also apply the regions' usage reports to last_used_at.

    Several relays may run against one store: one holds the relay lease and publishes,
    the others stand by and take over within about the lease TTL once it stops renewing."""
    import os

    from producer.detectors import WatchSettings
    from producer.detectors.watch import watch_from
    from producer.kafka_io import UsageConsumer, check_credentials
    from producer.relay import Relay, RelayOptions
    from producer.relay_lease import RelayLease, holder_id
    from producer.seal_mode import record_keyring, sealing
    from producer.usage import UsageApplier
    from producer.wakeup import waker_for
    from shared import stages, tracing
    from shared.keys import Topics
    from shared.runtime import keyring_from, stop_on_signals

    cli.configure_logging(force_json=as_json)
    settings = cli.settings
    watch_settings = WatchSettings.from_env(cli.environ)  # bad ones: exit before connecting
    keyring = keyring_from(settings)
    stages.enable(settings.stage_timing)
    tracing.configure("tokensync-relay", settings.topic_prefix, os.environ)
    check_credentials(settings.kafka_bootstrap, settings.kafka_client)  # wrong ones: exit
    store = TokenStore.from_settings(settings)
    topics = Topics(settings.topic_prefix)

    topics_ready = threading.Event()
    connect = _publisher_factory(settings, topics, topics_ready)
    serve_metrics(metrics_port)
    stop = stop_on_signals()
    waker = waker_for(store.engine)
    options = RelayOptions(
        heartbeat_interval_s=settings.heartbeat_interval_s,
        lease_renew_interval_s=lease_ttl / 3,
    )
    lease = RelayLease(store.engine, holder_id(), ttl_ms=int(lease_ttl * 1000))
    usage = UsageApplier(
        store.engine,
        lambda: UsageConsumer(
            settings.kafka_bootstrap,
            topics.usage,
            f"{settings.topic_prefix}-usage",
            client=settings.kafka_client,
        ),
        keyring,
        watch=watch_from(settings, store, watch_settings),
        region_keys=settings.region_keys,
    )

    def apply_usage() -> None:
        # subscribe once the relay created the topics (a consumer of a missing topic
        # logs errors until it appears)
        while not topics_ready.wait(0.5):
            if stop.is_set():
                return
        usage.run(stop)

    usage_thread = threading.Thread(target=apply_usage, name="usage", daemon=True)
    usage_thread.start()
    try:
        connect_sealing = sealing(settings, topics.tokens, connect)
        signer = record_keyring(settings, keyring)
        Relay(store.engine, connect_sealing, signer, waker, options=options, lease=lease).run(stop)
    finally:
        stop.set()
        usage_thread.join(timeout=10)
        waker.close()
        store.close()


def _publisher_factory(
    settings: Settings, topics: Topics, topics_ready: threading.Event
) -> Callable[[], EventPublisher]:
    """The relay's connect: ensure the topics (then set ``topics_ready``), open a producer."""
    from producer.kafka_io import KafkaAdmin, KafkaPublisher

    def connect() -> EventPublisher:
        admin = KafkaAdmin(settings.kafka_bootstrap, client=settings.kafka_client)
        try:
            admin.ensure_topics(
                topics,
                settings.partitions,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
            )
        finally:
            admin.close()
        topics_ready.set()
        return KafkaPublisher(settings.kafka_bootstrap, topics.tokens, client=settings.kafka_client)

    return connect


@click.command(
    epilog="\b\nExamples:\n  tokensync api --host 0.0.0.0 --port 8080",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@json_option
@pass_cli
def api(cli: CliContext, *, host: str, port: int, as_json: bool) -> None:
    """Serve the token store's HTTP API (OpenAPI at /docs)."""
    import os

    import uvicorn

    from producer.api import create_app
    from shared import tracing

    cli.configure_logging(force_json=as_json)
    store = TokenStore.from_settings(cli.settings)
    tracing.configure("tokensync-api", cli.settings.topic_prefix, os.environ)
    try:
        uvicorn.run(
            create_app(cli.settings, store),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,  # uvicorn's loggers go through ours (shared.logs): one format
        )
    finally:
        store.close()


@click.command(
    epilog="\b\nExamples:\n  tokensync demo\n  tokensync demo --json",
)
@json_option
@pass_cli
def demo(cli: CliContext, *, as_json: bool) -> None:
    """The end-to-end story on the local stack, with measured revoke-to-denied latencies."""
    from producer.demo import run_demo

    settings = cli.settings
    store = TokenStore.from_settings(settings)
    try:
        echo = (lambda _line: None) if as_json else click.echo
        if not as_json:
            click.echo(
                f"tokensync demo: store {settings.database_url}, Kafka {settings.kafka_bootstrap}, "
                f"regions {', '.join(r.name for r in settings.regions)}"
            )
            if settings.link_delays:
                click.echo(
                    f"emulated one-way link delays to Kafka: {settings.link_delays} "
                    "(a region's revoke -> denied cannot beat its delay)"
                )
        report = run_demo(settings, store, echo)
    finally:
        store.close()
    emit(as_json, report.to_json(), ["", "all steps behaved" if report.ok else "SOME STEPS FAILED"])
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command(
    epilog="\b\nExamples:\n  tokensync backfill\n  tokensync backfill --batch-size 5000",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="Rows per transaction.",
)
@json_option
@pass_cli
def backfill(cli: CliContext, *, batch_size: int, as_json: bool) -> None:
    """Publish the token rows that existed before tokensync was installed (resumable;
    every store start also does it, without progress)."""
    from producer.backfill import backfill as run_backfill
    from producer.schema import create_engine, migrate

    engine = create_engine(cli.settings.database_url)
    try:
        migrate(engine, backfill_rows=False)

        def progress(done: int, total: int) -> None:
            if not as_json:
                click.echo(f"backfill: {done}/{total} rows", err=True)

        result = run_backfill(
            engine, batch_size=batch_size, progress=progress, audit=AuditContext.cli()
        )
    finally:
        engine.dispose()
    emit(
        as_json,
        {"rows": result.rows, "batches": result.batches},
        f"backfill done: {result.rows} row(s) in {result.batches} batch(es)",
    )
