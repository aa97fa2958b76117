"""``tokensync doctor [--json]``: pass/warn/fail per guarantee, with the fix; exit 0/1/2."""

from __future__ import annotations

import click

from producer.cli_support import Command, open_store
from shared.cli import CliContext, emit, json_option, pass_cli

__all__ = ["doctor"]


@click.command(
    cls=Command,
    epilog="\b\nExamples:\n  tokensync doctor\n  tokensync doctor --json",
)
@json_option
@pass_cli
def doctor(cli: CliContext, *, as_json: bool) -> None:
    """Check this deployment against tokensync's guarantees: store triggers and clock,
    relay backlog, each region's Redis and freshness, the Kafka topic. Exit 0 when all
    pass, 1 on a warning, 2 on a failure."""
    from producer.doctor import exit_code, run_checks

    checks = run_checks(cli.settings, open_store(cli))
    lines = [
        f"{c.outcome.upper():<5} {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if c.fix else "")
        for c in checks
    ]
    emit(as_json, [c.to_json() for c in checks], lines)
    code = exit_code(checks)
    if code:
        raise click.exceptions.Exit(code)
