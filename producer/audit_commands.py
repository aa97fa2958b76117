"""``tokensync audit``: read the audit trail (who did what, when, why, with which seq)."""

from __future__ import annotations

import datetime as dt

import click

from producer.cli_support import Command, open_store
from shared.cli import CliContext, emit, json_option, pass_cli

__all__ = ["audit"]


@click.command(
    cls=Command,
    epilog="\b\nExamples:\n"
    "  tokensync audit --since 1h\n"
    "  tokensync audit --actor alice --limit 20 --json",
)
@click.option("--since", default=None, help="Only records this recent: 90s/15m/1h/7d, or a time.")
@click.option(
    "--actor",
    default=None,
    help="An actor (user@host, 'token:12 (...)'), or a kind: cli, api, python, sql.",
)
@click.option("--action", default=None, help="Only this action, e.g. revoke.all.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@json_option
@pass_cli
def audit(
    cli: CliContext,
    *,
    since: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The audit trail: who did what to the token store, when, why, with which seq."""
    from producer.audit import parse_since, read

    since_ms = parse_since(since) if since else None
    store = open_store(cli)
    entries = read(store.engine, since_ms=since_ms, actor=actor, action=action, limit=limit)
    lines = [
        f"{_when(e.at_ms)}  {e.actor:<28} {e.action:<17} {e.scope or '-':<32} "
        f"seq {e.seq or '-'}"
        + (f"  removed {e.removed}" if e.removed else "")
        + (f"  reason: {e.reason}" if e.reason else "")
        + (f"  receipt: {e.receipt.get('summary', 'attached')}" if e.receipt else "")
        for e in entries
    ]
    emit(as_json, [e.to_json() for e in entries], lines or "no audit records")


def _when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
