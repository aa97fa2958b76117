"""``tokensync store``: the token store's own health (``store repair``)."""

from __future__ import annotations

import sys

import click

from producer.audit import AuditContext
from producer.cli_support import EXIT_FAILED, Group, fail, open_store, reason_option
from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import UsageError

__all__ = ["store"]


@click.group(
    cls=Group,
    epilog='\b\nExamples:\n  tokensync store repair --reason "restored from backup"',
)
def store() -> None:
    """The token store: check and repair what tokensync installs in it."""


@store.command(
    "repair",
    epilog="\b\nExamples:\n"
    '  tokensync store repair --reason "restored from backup"\n'
    "  tokensync store repair --yes --json",
)
@click.option(
    "--skip-epoch",
    is_flag=True,
    help="Do not revoke tokens issued before now (only if no token was deleted or changed "
    "while the triggers were missing).",
)
@click.option("--force", is_flag=True, help="Reinstall even when every trigger is in place.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required off a terminal).")
@reason_option
@json_option
@pass_cli
def repair(
    cli: CliContext,
    *,
    skip_epoch: bool,
    force: bool,
    yes: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Reinstall missing outbox triggers (after migrate:fresh, a restore, a manual DROP)
    and revoke every token issued before now: changes made while the triggers were
    missing never reached a region."""
    from producer.repair import missing, repair

    token_store = open_store(cli)
    gone = missing(token_store)
    if not gone and not force:
        emit(as_json, {"reinstalled": [], "epoch": None}, "every outbox trigger is in place")
        return
    if not skip_epoch and not yes:
        if as_json or not sys.stdin.isatty():
            raise UsageError(
                "store repair revokes every token issued before now (deletions made while "
                "the triggers were missing cannot be known): pass --yes, or --skip-epoch"
            )
        click.echo(
            f"Missing: {', '.join(gone) or 'none'}. Repairing revokes EVERY token issued "
            "before now in every region (users sign in again)."
        )
        if not click.confirm("Reinstall and revoke them all?", default=False):
            fail(False, "not confirmed: nothing was changed", "declined", EXIT_FAILED)
    result = repair(
        token_store,
        skip_epoch=skip_epoch,
        audit=AuditContext.cli(reason or "store repair: outbox triggers were missing"),
    )
    lines = [f"reinstalled the outbox triggers (missing: {', '.join(gone) or 'none'})"]
    if result.backfilled:
        lines.append(f"published {result.backfilled} row(s) inserted while they were missing")
    if result.epoch is not None:
        lines.append(
            f"global epoch seq {result.epoch.seq}: tokens issued before it are revoked, "
            f"{result.epoch.removed} row(s) removed from the store"
        )
    emit(as_json, result.to_json(), lines)
