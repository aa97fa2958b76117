"""``tokensync bench SCENARIO``: run one benchmark (or ``all``) and write bench/results/."""

from __future__ import annotations

import click

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Benchmarks: each prints a table, writes bench/results/<scenario>.json and .png."""
    from shared.logs import configure_logging

    configure_logging("warning")


@bench.command("validate")
@click.option("--seconds", type=float, default=6.0, show_default=True, help="Per method.")
def validate(seconds: float) -> None:
    """Validation latency and throughput vs a bare GET and the Sanctum way (PostgreSQL)."""
    from bench import validate as scenario

    scenario.run(seconds)
