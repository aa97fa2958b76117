"""``tokensync region add | list | status | remove``: region lifecycle for platform teams.

Over 350 lines: the four commands of one lifecycle and the progress view of
``region add``, whose atomicity (register, start, load, or roll back) they share;
the state they read is ``shared.region_state``, the worker host ``region_hosts``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import click
import redis

from producer.audit import AuditContext
from producer.receipts import all_regions
from producer.region_hosts import WorkerHost, worker_host
from producer.store import TokenStore
from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import NotFoundError, PublishError
from shared.keys import RedisKeys, Topics, consumer_group
from shared.region_state import RegionState, count_tokens, read_region_state
from shared.settings import Region, Settings, redact_url

__all__ = ["region"]


def _state(settings: Settings, region: Region) -> RegionState:
    client = redis.Redis.from_url(region.redis_url, socket_timeout=2.0)
    try:
        return read_region_state(client, RedisKeys(settings.redis_namespace), region.name)
    finally:
        client.close()


def _tokens(settings: Settings, region: Region) -> int | None:
    client = redis.Redis.from_url(region.redis_url, socket_timeout=5.0)
    try:
        return count_tokens(client, RedisKeys(settings.redis_namespace))
    except redis.RedisError:
        return None
    finally:
        client.close()


def _lag(state: RegionState, ends: dict[int, int]) -> int | None:
    if not state.reachable or not ends:
        return None
    return sum(
        max(0, end - (state.partitions[p].next_offset if p in state.partitions else 0))
        for p, end in ends.items()
    )


def _end_offsets(settings: Settings) -> dict[int, int]:
    from producer.kafka_io import KafkaAdmin

    try:
        admin = KafkaAdmin(settings.kafka_bootstrap, timeout_s=3, client=settings.kafka_client)
    except PublishError:
        return {}
    try:
        return admin.end_offsets(Topics(settings.topic_prefix).tokens)
    except PublishError:
        return {}
    finally:
        admin.close()


def _forget_generation(settings: Settings, region: Region) -> bool:
    """Delete the region cache's meta (its generation and ``ready`` flag) so that the next
    worker starts a new generation from offset 0; False if Redis did not answer."""
    client = redis.Redis.from_url(region.redis_url, socket_timeout=5.0)
    try:
        client.delete(RedisKeys(settings.redis_namespace).meta)
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()


def _rate_eta(
    samples: list[tuple[float, int]], loaded: int, total: int
) -> tuple[float, float | None]:
    """Records per second over the last samples (about ten seconds) and the seconds left, if
    the total is known and the rate is positive."""
    now = samples[-1][0]
    window = [s for s in samples if now - s[0] <= 10.0] or samples[-1:]
    first, last = window[0], window[-1]
    elapsed = last[0] - first[0]
    rate = (last[1] - first[1]) / elapsed if elapsed > 0 else 0.0
    eta = (total - loaded) / rate if total and rate > 0 and total >= loaded else None
    return max(rate, 0.0), eta


def progress_line(loaded: int, total: int, rate: float, eta: float | None) -> str:
    """``1,200/5,000 records  300/s  ETA 0:13``; the total and ETA only once known."""
    done = f"{loaded:,}/{total:,} records" if total else f"{loaded:,} records (total not yet known)"
    parts = [done, f"{rate:,.0f}/s"]
    if eta is not None:
        minutes, seconds = divmod(int(eta + 0.5), 60)
        parts.append(f"ETA {minutes}:{seconds:02d}")
    return "  ".join(parts)


def _wait_ready(settings: Settings, region: Region, timeout_s: float, as_json: bool) -> RegionState:
    """Poll the region until ready: a progress bar on a terminal (records loaded, total once
    known, rate, ETA), the same figures as a line every few seconds when piped."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(stderr=True)
    terminal = console.is_terminal and not as_json
    deadline = time.monotonic() + timeout_s
    samples: list[tuple[float, int]] = []
    with Progress(
        TextColumn(f"bootstrap {region.name}"),
        BarColumn(),
        TextColumn("{task.fields[figures]}"),
        console=console,
        disable=not terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("load", total=None, figures="waiting for the worker")
        last_log = 0.0
        while True:
            state = _state(settings, region)
            now = time.monotonic()
            samples.append((now, state.bootstrap_loaded))
            del samples[:-200]
            rate, eta = _rate_eta(samples, state.bootstrap_loaded, state.bootstrap_total)
            figures = (
                progress_line(state.bootstrap_loaded, state.bootstrap_total, rate, eta)
                if state.reachable
                else f"waiting for {redact_url(region.redis_url)}"
            )
            bar.update(
                task,
                completed=state.bootstrap_loaded,
                total=state.bootstrap_total or None,
                figures=figures,
            )
            if state.ready or now >= deadline:
                return state
            if not terminal and not as_json and now - last_log >= 2:
                click.echo(f"bootstrap {region.name}: {figures}", err=True)
                last_log = now
            time.sleep(0.1)


def _start_worker(
    host: WorkerHost | None, new: Region, store: TokenStore, *, registered_now: bool
) -> bool:
    """Start the region's worker if a host runs here (True then); a failure or Ctrl-C
    unregisters a region this command just registered (not loading: not registered)."""
    try:
        started = host is not None and host.running()
        if host is not None and started and not host.worker_alive(new.name):
            host.add_worker(new)
        return started
    except BaseException:
        if registered_now:
            if host is not None:
                with contextlib.suppress(Exception):
                    host.remove_worker(new.name)
            with contextlib.suppress(Exception):
                store.remove_region(new.name, audit=AuditContext.cli())
        raise


@click.group(
    epilog="\b\nExamples:\n"
    "  tokensync region add ap --redis redis://redis-ap:6379/0\n"
    "  tokensync region status",
)
def region() -> None:
    """Add, list, inspect and remove regions."""


@region.command(
    "add",
    epilog="\b\nExamples:\n"
    "  tokensync region add ap --redis redis://:PASSWORD@redis-ap:6379/0\n"
    "  tokensync region add ap --redis redis://redis-ap:6379/0 --no-wait --json",
)
@click.argument("name")
@click.option("--redis", "redis_url", required=True, help="The region's Redis URL.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the region to become ready.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait.")
@json_option
@pass_cli
def add(
    cli: CliContext, *, name: str, redis_url: str, no_wait: bool, timeout: float, as_json: bool
) -> None:
    """Register a region; on the local stack also start its worker and show the bootstrap.

    Atomic from the user's side: a failure or Ctrl-C before the worker runs leaves the region
    unregistered; after that it is fully added and loading. Running the same command again
    finishes the job (a region already registered with this Redis URL is not an error).
    """
    new = Region(name, redis_url)
    shown = redact_url(redis_url)  # screens and JSON never carry the password
    settings = cli.settings
    store = TokenStore.from_settings(settings)
    try:
        known = {r.name: r for r in all_regions(settings, store)}
        host = worker_host(cli.cwd, cli.environ)
        registered_now = False
        if name in known:
            if known[name].spec != new.spec:
                raise click.UsageError(
                    f"region {name!r} already exists with Redis {redact_url(known[name].spec)}"
                )
        else:
            # readiness belongs to the generation this region's worker builds: a cache left
            # on this Redis (a region removed without --purge) must not look ready
            if not _forget_generation(settings, new):
                click.echo(f"tokensync: warning: {shown} does not answer", err=True)
            store.add_region(new, audit=AuditContext.cli())
            registered_now = True
        started = _start_worker(host, new, store, registered_now=registered_now)
        data: dict[str, Any] = {
            "region": name,
            "redis_url": shown,
            "worker_started": started,
            "already_registered": not registered_now,
            "local_stack": "not installed" if host is None else ("up" if started else "down"),
        }
        lines = [f"region {name} registered" if registered_now else f"region {name} exists"]
        if host is None:
            lines.append("the local stack is not installed here, so no worker was started")
        if not started:
            lines.append(f"start its worker: tokensync worker --region {name} --redis {shown}")
        if not no_wait and started:
            began = time.monotonic()
            try:
                state = _wait_ready(settings, new, timeout, as_json)
            except KeyboardInterrupt:
                click.echo(
                    f"tokensync: region {name} is added and its worker keeps loading; "
                    f"follow it with 'tokensync region status' or re-run this command",
                    err=True,
                )
                raise click.exceptions.Exit(130) from None
            data["ready"] = state.ready
            data["seconds"] = round(time.monotonic() - began, 2)
            data["live_tokens_in_store"] = store.count_live()
            data["records_loaded"] = state.bootstrap_loaded
            lines.append(
                f"region {name} ready after {data['seconds']} s"
                f" ({state.bootstrap_loaded:,} records loaded)"
                if state.ready
                else f"region {name} not ready after {timeout:g} s"
            )
        emit(as_json, data, lines)
        if data.get("ready") is False:
            raise click.exceptions.Exit(1)
    finally:
        store.close()


@region.command(
    "list",
    epilog="\b\nExamples:\n  tokensync region list\n  tokensync region list --json",
)
@json_option
@pass_cli
def list_regions(cli: CliContext, *, as_json: bool) -> None:
    """Every region: from settings and registered in the store."""
    store = TokenStore.from_settings(cli.settings)
    try:
        regions = all_regions(cli.settings, store)
    finally:
        store.close()
    emit(
        as_json,
        [{"region": r.name, "redis_url": redact_url(r.redis_url)} for r in regions],
        [f"{r.name:<12} {redact_url(r.redis_url)}" for r in regions] or "no regions",
    )


@region.command(
    "status",
    epilog="\b\nExamples:\n  tokensync region status\n  tokensync region status --no-count --json",
)
@click.option("--no-count", is_flag=True, help="Skip counting cached tokens (a SCAN).")
@json_option
@pass_cli
def status(cli: CliContext, *, no_count: bool, as_json: bool) -> None:
    """Per region: ready, lag in records, freshness, cached tokens, apply rate."""
    settings = cli.settings
    store = TokenStore.from_settings(settings)
    try:
        regions = all_regions(settings, store)
    finally:
        store.close()
    ends = _end_offsets(settings)
    rows = []
    for r in regions:
        state = _state(settings, r)
        fresh = state.freshness_s()
        rows.append(
            {
                "region": r.name,
                "reachable": state.reachable,
                "ready": state.ready,
                "lag": _lag(state, ends),
                "freshness_s": None if fresh is None else round(fresh, 3),
                "tokens": None if no_count or not state.reachable else _tokens(settings, r),
                "apply_rate": state.apply_rate,
                "error": state.error,
            }
        )

    def cell(value: object, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    lines = [f"{'region':<10} {'ready':<6} {'lag':>8} {'fresh(s)':>9} {'tokens':>10} {'rate/s':>9}"]
    for row in rows:
        ready = "yes" if row["ready"] else ("DOWN" if not row["reachable"] else "no")
        lines.append(
            f"{row['region']:<10} {ready:<6} {cell(row['lag']):>8} "
            f"{cell(row['freshness_s'], '{:.2f}'):>9} {cell(row['tokens']):>10} "
            f"{row['apply_rate']:>9.0f}"
        )
    emit(as_json, rows, lines if rows else "no regions")
    if any(not row["ready"] for row in rows):
        raise click.exceptions.Exit(1)


@region.command(
    "remove",
    epilog="\b\nExamples:\n  tokensync region remove ap\n  tokensync region remove ap --purge",
)
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete the region's cached keys.")
@json_option
@pass_cli
def remove(cli: CliContext, *, name: str, purge: bool, as_json: bool) -> None:
    """Stop the region's worker (on the local stack), delete its consumer group, forget it."""
    from producer.kafka_io import KafkaAdmin

    settings = cli.settings
    store = TokenStore.from_settings(settings)
    try:
        known = {r.name: r for r in all_regions(settings, store)}
        if name not in known:
            raise NotFoundError(f"no region named {name!r}")
        host = worker_host(cli.cwd, cli.environ)
        stopped = host.remove_worker(name) if host is not None else False
        group_deleted = True
        try:
            admin = KafkaAdmin(settings.kafka_bootstrap, client=settings.kafka_client)
            try:
                admin.delete_group(consumer_group(name, settings.topic_prefix))
            finally:
                admin.close()
        except PublishError as e:
            group_deleted = False
            click.echo(f"tokensync: warning: {e}", err=True)
        # the generation goes first: a cache left behind (or half purged) never looks ready,
        # and a worker started on it later rebuilds it from offset 0
        forgotten = _forget_generation(settings, known[name])
        if not forgotten:
            click.echo(
                f"tokensync: warning: {redact_url(known[name].redis_url)} does not answer",
                err=True,
            )
        if purge and forgotten:
            client = redis.Redis.from_url(known[name].redis_url)
            try:
                keys = list(
                    client.scan_iter(match=RedisKeys(settings.redis_namespace).pattern, count=5000)
                )
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i : i + 1000])
            finally:
                client.close()
        with contextlib.suppress(NotFoundError):  # a region named only in settings
            store.remove_region(name, audit=AuditContext.cli())
    finally:
        store.close()
    emit(
        as_json,
        {
            "region": name,
            "worker_stopped": stopped,
            "group_deleted": group_deleted,
            "purged": purge,
        },
        f"region {name} removed" + (" (worker stopped)" if stopped else ""),
    )
