"""``tokensync bench SCENARIO``: run one benchmark (or ``all``) and write bench/results/."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import click

__all__ = ["bench"]


@contextlib.contextmanager
def _announced(name: str, what: str) -> Iterator[None]:
    """Progress on stderr (at a terminal and piped alike): what starts, then how long it
    took and where its results went; the table itself goes to stdout."""
    from bench.report import RESULTS

    click.echo(f"bench {name}: starting ({what}; a throwaway deployment of its own)", err=True)
    started = time.monotonic()
    yield
    click.echo(
        f"bench {name}: done in {time.monotonic() - started:.1f} s; results in {RESULTS.resolve()}",
        err=True,
    )


@click.group(
    epilog="\b\nExamples:\n  tokensync bench validate --seconds 10\n  tokensync bench all",
)
def bench() -> None:
    """Benchmarks: each prints a table, writes bench/results/<scenario>.json and .png."""
    from shared.logs import configure_logging

    configure_logging("warning")
    # SIGTERM (timeout, a cancelled job) unwinds like Ctrl-C: the throwaway deployment's
    # servers are stopped on the way out instead of being left running
    signal.signal(signal.SIGTERM, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@bench.command(
    "validate",
    epilog="\b\nExamples:\n  tokensync bench validate --seconds 10",
)
@click.option("--seconds", type=float, default=6.0, show_default=True, help="Per method.")
def validate(seconds: float) -> None:
    """Validation latency and throughput vs a bare GET and the Sanctum way (PostgreSQL)."""
    from bench import validate as scenario

    with _announced("validate", "validation latency and throughput"):
        scenario.run(seconds)


@bench.command(
    "propagation",
    epilog="\b\nExamples:\n  tokensync bench propagation --samples 200 --store postgresql"
    "\n  tokensync bench propagation --brokers 3 --samples 300 --epochs 300"
    "\n  tokensync bench propagation --samples 300 --epochs 300 --breakdown",
)
@click.option("--samples", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--epochs", type=click.IntRange(10), default=1000, show_default=True)
@click.option(
    "--store",
    type=click.Choice(["postgresql", "sqlite", "mariadb"]),
    default="postgresql",
    show_default=True,
)
@click.option(
    "--brokers",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Above 1: run on one broker, then on a KRaft cluster of this many (RF min(3, N),"
    " min ISR 2), and report both side by side (bench/results/propagation-brokers.*).",
)
@click.option(
    "--breakdown",
    is_flag=True,
    help="Also time each stage (relay, Kafka, worker, Redis) of every sample: "
    "bench/results/propagation-breakdown.*",
)
@click.option(
    "--relay",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="The relay as a `tokensync relay` process, as deployed, or as a thread of the "
    "benchmark (sharing its GIL with the pollers and the load; the default until issue 18).",
)
def propagation(
    samples: int, epochs: int, store: str, *, brokers: int, breakdown: bool, relay: str
) -> None:
    """Revoke -> denied in every region (one token and principal epochs), under load."""
    from bench import propagation as scenario

    what = "revoke -> denied in every region"
    if brokers > 1:
        what += f", on 1 broker and then on {brokers}"
    with _announced("propagation", what):
        scenario.run(samples, epochs, store, brokers, breakdown=breakdown, relay=relay)


@bench.command(
    "apply",
    epilog="\b\nExamples:\n  tokensync bench apply --records 100000\n"
    "  tokensync bench apply --workers 2",
)
@click.option("--records", type=click.IntRange(1000), default=200_000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Worker processes of the region (one consumer group sharing its partitions).",
)
def apply(records: int, workers: int) -> None:
    """Records/s of one region loading the topic, with one worker process or several."""
    from bench import bootstrap as scenario

    what = "records/s of one worker" if workers == 1 else f"records/s of {workers} workers"
    with _announced("apply", what + " of one region"):
        scenario.run(records, "apply" if workers == 1 else f"apply-{workers}w", workers=workers)


@bench.command(
    "bootstrap",
    epilog="\b\nExamples:\n  tokensync bench bootstrap --tokens 100000",
)
@click.option("--tokens", type=click.IntRange(1000), default=1_000_000, show_default=True)
def bootstrap(tokens: int) -> None:
    """A new region, from empty to ready, with 1M live tokens in the topic."""
    from bench import bootstrap as scenario

    with _announced("bootstrap", "a new region from empty to ready"):
        scenario.run(tokens, "bootstrap")


@bench.command(
    "bulk",
    epilog="\b\nExamples:\n  tokensync bench bulk --tokens 100000",
)
@click.option("--tokens", type=click.IntRange(1000), default=100_000, show_default=True)
def bulk(tokens: int) -> None:
    """100k per-token revocations until enforced in every region."""
    from bench import bulk as scenario

    with _announced("bulk", "per-token revocations until enforced"):
        scenario.run(tokens)


@bench.command(
    "gate",
    epilog="\b\nExamples:\n  tokensync bench gate --seconds 10 --workers 2",
)
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Per method and N.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes of the gate and of the uvicorn baseline.",
)
def gate(seconds: float, workers: int) -> None:
    """/auth through the gate at 1, 8, 32 keep-alive connections vs uvicorn, the in-process
    validator and the Sanctum way."""
    from bench import gate as scenario

    with _announced("gate", "/auth through the gate"):
        scenario.run(seconds, workers)


@bench.command(
    "all",
    epilog="\b\nExamples:\n  tokensync bench all",
)
@click.pass_context
def all_scenarios(ctx: click.Context) -> None:
    """Every scenario, one after the other (several minutes)."""
    ctx.invoke(validate)
    ctx.invoke(propagation)
    ctx.invoke(apply)
    ctx.invoke(bootstrap)
    ctx.invoke(bulk)
    ctx.invoke(wan)
    ctx.invoke(gate)
    ctx.invoke(docs)


@bench.command(
    "wan",
    epilog="\b\nExamples:\n  tokensync bench wan --samples 100",
)
@click.option("--samples", type=click.IntRange(10), default=200, show_default=True)
def wan(samples: int) -> None:
    """Regions 0, 40 and 90 ms away: validation vs the distant store, revoke -> denied."""
    from bench import wan as scenario

    with _announced("wan", "regions 0, 40 and 90 ms away"):
        scenario.run(samples)


@bench.command(
    "docs",
    epilog="\b\nExamples:\n  tokensync bench docs",
)
def docs() -> None:
    """Refresh the figures in docs/benchmarks.md from bench/results/*.json."""
    from bench.docs import render

    click.echo(f"updated {render()}")
