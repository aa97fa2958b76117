"""``tokensync worker --region R``: run one region's worker until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click
import structlog

from shared import stages, tracing
from shared.cli import CliContext, json_option, metrics_option, pass_cli, serve_metrics
from shared.logs import get_logger
from shared.runtime import keyring_from
from shared.settings import Region
from workers.app import RegionWorker, WorkerOptions, build_app
from workers.internals import check_internals

__all__ = ["worker"]

log = get_logger(__name__)


async def run_worker(
    worker: RegionWorker, kafka_bootstrap: str, *, handle_signals: bool = True
) -> bool:
    """Run until stopped; True if the cache was lost and the worker must rebuild."""
    from faust.contrib.asgi import bind_to_running_loop, faust_app_running

    try:
        try:
            # before joining the group: a refusal changes nothing
            await worker.check_cache(kafka_bootstrap)
        except BaseException:
            await worker.cache.close()
            raise
        loop = bind_to_running_loop(worker.app)
        worker.install_hooks()
        structlog.contextvars.bind_contextvars(region=worker.region.name)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.done.set)
        try:
            async with faust_app_running(worker.app, stop_timeout=30):
                while not worker.done.is_set():
                    if worker.app.should_stop:
                        log.error("worker_app_stopped")
                        break
                    try:
                        await asyncio.wait_for(worker.done.wait(), timeout=1.0)
                    except TimeoutError:
                        continue
        finally:
            if worker.progress is not None:
                await worker.progress.stop()
            await worker.forget_signers()
            await worker.cache.close()
    finally:
        worker.remove_data_dir()  # faust's, temporary: nothing is left behind
    return worker.rebuild


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@click.command(
    epilog="\b\nExamples:\n"
    "  tokensync worker --region eu\n"
    "  tokensync worker --region eu --metrics-port 9102",
)
@click.option(
    "--region", "region_name", required=True, help="Region name (consumer group tokensync-NAME)."
)
@click.option(
    "--redis", "redis_url", default=None, help="The region's Redis URL (default: from settings)."
)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True)
@metrics_option
@json_option
@pass_cli
def worker(
    cli: CliContext,
    *,
    region_name: str,
    redis_url: str | None,
    batch_size: int,
    metrics_port: int | None,
    as_json: bool,
) -> None:
    """Apply the token stream to one region's Redis (faust-streaming)."""
    check_internals()  # before anything starts: a faust release that moved what we rely on
    cli.configure_logging(force_json=as_json)
    settings = cli.settings
    region = Region(region_name, redis_url) if redis_url else settings.region(region_name)
    keyring = keyring_from(settings)
    stages.enable(settings.stage_timing)
    tracing.configure(f"tokensync-worker-{region.name}", settings.topic_prefix, os.environ)
    serve_metrics(metrics_port)
    options = WorkerOptions(
        batch_size=batch_size,
        usage_interval_s=settings.usage_interval_s,
        allow_eviction=settings.allow_eviction,
        shared_watch_s=max(2.0, 4 * settings.heartbeat_interval_s),
        clock_skew_allowance_s=settings.clock_skew_allowance_s,
    )
    log.info("worker_starting", region=region.name)
    app = build_app(settings, region, keyring, options)
    # until run_worker's loop handles SIGTERM (it does once the cache checks passed), a
    # SIGTERM ends the start-up through the finally blocks, removing faust's data directory
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        rebuild = asyncio.run(run_worker(app, settings.kafka_bootstrap))
    finally:
        app.remove_data_dir()
    if rebuild:
        log.warning("worker_restarting_to_rebuild", region=region.name)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - same program
