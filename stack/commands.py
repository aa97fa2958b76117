"""``tokensync stack up | down | status``: the local stack from the command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import UsageError
from shared.settings import Settings, parse_regions
from stack.kafka import KafkaJars, default_cache_dir
from stack.launcher import DEFAULT_REGIONS, ComponentStatus, LocalStack, StackOptions

__all__ = ["stack"]


def _table(rows: list[ComponentStatus]) -> list[str]:
    if not rows:
        return ["no stack processes are recorded here (tokensync stack up starts them)"]
    lines = [f"{'process':<14} {'pid':>8} {'port':>6}  state"]
    for r in rows:
        port = str(r.port) if r.port else "-"
        state = "up" if r.up else "DOWN"
        if r.up and r.role is not None:
            epoch = f", epoch {r.role.epoch}" if r.role.epoch is not None else ""
            state += f" ({r.role.role}{epoch})"
        lines.append(f"{r.name:<14} {r.pid:>8} {port:>6}  {state}")
    return lines


def _described(described: dict[str, Any]) -> list[str]:
    """The settings the stack runs with, one per line, above its processes."""
    if described["settings_file"] is None:
        return ["no settings file here yet (tokensync stack up writes one)", ""]
    lines = [
        f"{'store':<14} {described['store'] or '-'}",
        f"{'kafka':<14} {described['kafka'] or '-'}",
    ]
    lines += [f"{'region ' + r['name']:<14} {r['redis_url']}" for r in described["regions"]]
    return [*lines, f"{'settings':<14} {described['settings_file']}", ""]


def _status(local: LocalStack, rows: list[ComponentStatus], as_json: bool) -> None:
    described = local.described()
    emit(
        as_json,
        {**described, "processes": [r.to_json() for r in rows]},
        [*_described(described), *_table(rows)],
    )


def _default_regions(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The regions of ``TOKENSYNC_REGIONS`` in the environment, else eu, us and ap."""
    from_env = parse_regions(environ.get("TOKENSYNC_REGIONS", ""))
    return tuple(r.name for r in from_env) or DEFAULT_REGIONS


def _regions(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UsageError("--regions needs at least one region name")
    if len(set(names)) != len(names):
        raise UsageError(f"--regions repeats a name: {text}")
    return names


def _redis_ports(pairs: tuple[str, ...]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for pair in pairs:
        name, sep, port = pair.partition("=")
        if not sep or not port.isdigit():
            raise UsageError(f"--redis-port expects REGION=PORT, got {pair!r}")
        ports[name] = int(port)
    return ports


@click.group(
    epilog="\b\nExamples:\n  tokensync stack up\n  tokensync stack status",
)
def stack() -> None:
    """Run a real local stack: Kafka (KRaft, from its jars), a Redis per region, the processes."""


@stack.command(
    epilog="\b\nExamples:\n"
    "  tokensync stack up\n"
    "  tokensync stack up --regions eu,us,ap --link-delay us=40ms,ap=90ms\n"
    "  tokensync stack up --relays 2",
)
@click.option(
    "--regions",
    default=None,
    help="Comma-separated region names, one Redis each"
    f" [default: those of TOKENSYNC_REGIONS, else {','.join(DEFAULT_REGIONS)}].",
)
@click.option("--kafka-port", type=int, default=None, help="Broker port (default: free port).")
@click.option(
    "--redis-port",
    "redis_ports",
    multiple=True,
    metavar="REGION=PORT",
    help="Fix a region's Redis port.",
)
@click.option(
    "--kafka-heap",
    default=None,
    help="Broker JVM heap [default: 512m; 256m per broker with --brokers 3].",
)
@click.option(
    "--brokers",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Kafka brokers: 3 runs a three-node KRaft cluster (one controller quorum); "
    "topics then get replication factor 3 and min.insync.replicas 2.",
)
@click.option(
    "--replicas",
    type=click.IntRange(0, 3),
    default=0,
    show_default=True,
    help="Read replicas of each region's Redis: workers write to the primary, validators "
    "read a replica (TOKENSYNC_READ_FROM).",
)
@click.option(
    "--relays",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Relay processes: one publishes (it holds the relay lease), the others stand by "
    "and take over when it dies or hangs (stack status shows which is active).",
)
@click.option("--no-apps", is_flag=True, help="Servers only: no relay, API or workers.")
@click.option(
    "--link-delay",
    "link_delay",
    default="",
    help="Emulated one-way delay of regions' links to Kafka, e.g. us=40ms,ap=90ms"
    " (default: TOKENSYNC_LINK_DELAYS).",
)
@json_option
@pass_cli
def up(
    cli: CliContext,
    *,
    regions: str | None,
    kafka_port: int | None,
    redis_ports: tuple[str, ...],
    kafka_heap: str | None,
    brokers: int,
    replicas: int,
    relays: int,
    no_apps: bool,
    link_delay: str,
    as_json: bool,
) -> None:
    """Start whatever of the stack is not running yet, and write its settings.

    Every TOKENSYNC_* setting of the environment is honoured and recorded in the settings
    file (environment, then the settings file, then defaults).
    """
    from stack.delayproxy import parse_delays

    names = _default_regions(cli.environ) if regions is None else _regions(regions)
    # not cli.settings: its note about a store differing from the stack's is moot here
    settings = Settings.load(cli.environ, cli.cwd)
    delays = parse_delays(link_delay or settings.link_delays)  # flag, else settings
    unknown = sorted(set(delays) - set(names))
    if unknown:
        raise UsageError(f"--link-delay names regions not in --regions: {', '.join(unknown)}")
    local = LocalStack(cli.cwd, cli.environ, echo=lambda line: click.echo(line, err=True))
    options = StackOptions(
        names,
        kafka_port,
        _redis_ports(redis_ports),
        kafka_heap or ("512m" if brokers == 1 else "256m"),
        not no_apps,
        {r: d for r, d in delays.items() if d > 0},
        brokers=brokers,
        replicas=replicas,
        relays=relays,
    )
    _status(local, local.up(options), as_json)


@stack.command(
    epilog="\b\nExamples:\n  tokensync stack down",
)
@json_option
@pass_cli
def down(cli: CliContext, as_json: bool) -> None:
    """Stop exactly the processes `stack up` started (by pid)."""
    stopped = LocalStack(cli.cwd, cli.environ).down()
    emit(
        as_json,
        {"stopped": stopped},
        f"stopped {', '.join(stopped)}" if stopped else "nothing was running",
    )


@stack.command(
    epilog="\b\nExamples:\n  tokensync stack status\n  tokensync stack status --json",
)
@json_option
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """The store (no password), Kafka and regions the stack runs with, then each stack
    process: name, pid, port, up or down. Exits 1 if any is down."""
    local = LocalStack(cli.cwd, cli.environ)
    rows = local.status()
    _status(local, rows, as_json)
    if any(not r.up for r in rows):
        raise click.exceptions.Exit(1)


@stack.command(
    epilog="\b\nExamples:\n  tokensync stack fetch",
)
@json_option
def fetch(as_json: bool) -> None:
    """Fetch the pinned Kafka jars into the cache folder (once; later runs reuse them)."""
    jars = KafkaJars(default_cache_dir())
    cached = jars.present
    libs = jars.ensure()
    emit(
        as_json,
        {"version": jars.version, "libs": str(libs), "cached": cached},
        f"Kafka {jars.version} jars {'already in' if cached else 'fetched into'} {libs}",
    )


@stack.command("proxy", hidden=True)
@click.option("--listen", "listen_port", type=click.IntRange(1, 65535), required=True)
@click.option("--target", required=True, help="host:port to forward to.")
@click.option("--delay", default="0ms", help="One-way delay in each direction, e.g. 40ms.")
def proxy(listen_port: int, target: str, delay: str) -> None:
    """A delaying TCP proxy (the stack starts one per delayed region link)."""
    from shared.timeparse import parse_duration
    from stack.delayproxy import run_proxy

    run_proxy(listen_port, target, parse_duration(delay))
