"""Mass revocation commands: ``revoke principal``, ``revoke ability``, ``revoke all``.

One epoch event per scope, whatever the number of tokens; each needs a ``--reason``
(kept in the audit trail) and takes ``--dry-run`` (counts per principal type, writes
nothing); ``revoke all`` refuses a future time and asks for confirmation on a terminal.
"""

from __future__ import annotations

import sys

import click

from producer.audit import AuditContext
from producer.cli_support import (
    EXIT_FAILED,
    Group,
    dry_run_option,
    fail,
    nonempty,
    open_store,
    reason_option,
    report,
    require_reason,
    wait_option,
)
from shared.cli import CliContext, emit, json_option, pass_cli
from shared.errors import UsageError
from shared.timeparse import parse_instant

__all__ = ["revoke"]


@click.group(
    cls=Group,
    epilog="\b\nExamples:\n"
    "  tokensync revoke principal --type 'App\\Models\\User' --id 42 --reason \"account closed\"\n"
    '  tokensync revoke all --before now --reason "signing key leaked" --dry-run',
)
def revoke() -> None:
    """Mass revocation: one epoch event per scope, whatever the number of tokens."""


def _confirm(what: str, *, yes: bool, as_json: bool, text: str, question: str) -> None:
    """Go on only with ``--yes`` or a "y" typed at a terminal (exit 2 off a terminal or
    with --json, exit 1 when declined; nothing is revoked either way)."""
    if yes:
        return
    if as_json or not sys.stdin.isatty():
        raise UsageError(
            f"{what} cannot be undone: pass --yes (required with --json or off a terminal)"
        )
    click.echo(text)
    if not click.confirm(question, default=False):
        fail(False, "not confirmed: nothing was revoked", "declined", EXIT_FAILED)


@revoke.command(
    "principal",
    epilog="\b\nExamples:\n"
    "  tokensync revoke principal --type 'App\\Models\\User' --id 42 --reason gone --wait",
)
@click.option("--type", "tokenable_type", required=True, callback=nonempty)
@click.option("--id", "tokenable_id", required=True, help="A whole number, UUID or ULID.")
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_principal(
    cli: CliContext,
    *,
    tokenable_type: str,
    tokenable_id: str,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token of one principal issued until now."""
    from producer.dryrun import count_principal

    store = open_store(cli)
    if dry_run:
        count = count_principal(store, tokenable_type, tokenable_id)
        emit(as_json, count.to_json(), count.lines())
        return
    require_reason(reason, dry_run)
    audit = AuditContext.cli(reason)
    mutation = store.revoke_principal(tokenable_type, tokenable_id, audit=audit)
    warning = (
        None
        if mutation.removed
        else "warning: no stored token of this principal matched (check the type and the id);"
        " the epoch was published anyway"
    )
    report(
        cli,
        store,
        f"tokens of {tokenable_type}:{tokenable_id} revoked",
        mutation,
        wait=wait,
        as_json=as_json,
        extra=[warning] if warning else None,
        data_extra={"warning": warning} if warning else None,
    )


@revoke.command(
    "ability",
    epilog="\b\nExamples:\n"
    '  tokensync revoke ability orders:write --reason "scope retired" --dry-run\n'
    "  tokensync revoke ability orders:write --include-wildcard --yes --wait",
)
@click.argument("ability", callback=nonempty)
@click.option(
    "--include-wildcard",
    is_flag=True,
    help="Also revoke the live tokens holding '*' (one per-token revocation each; asks "
    "for confirmation on a terminal).",
)
@click.option(
    "--yes", is_flag=True, help="With --include-wildcard: do not ask (required off a terminal)."
)
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_ability(
    cli: CliContext,
    *,
    ability: str,
    include_wildcard: bool,
    yes: bool,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token whose abilities list ABILITY literally (and, with
    --include-wildcard, every live token holding '*')."""
    from producer.dryrun import count_ability

    store = open_store(cli)
    count = count_ability(store, ability)
    if dry_run:
        emit(as_json, count.to_json(), count.lines())
        return
    require_reason(reason, dry_run)
    audit = AuditContext.cli(reason)
    if include_wildcard:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(count.wildcard_by_type.items()))
        _confirm(
            "revoke ability --include-wildcard",
            yes=yes,
            as_json=as_json,
            text=(
                f"This also revokes EVERY live token holding '*' in every region, for good: "
                f"{count.wildcard_total} token(s) ({kinds or 'none stored'}), admin tokens "
                "included."
            ),
            question="Revoke them?",
        )
    mutation = store.revoke_ability(ability, include_wildcard=include_wildcard, audit=audit)
    if include_wildcard:
        extra = [f"{mutation.per_token} token(s) holding '*' revoked one by one"]
        still = 0
    else:
        still = count.wildcard_total
        extra = [
            f"{still} live token(s) hold '*' and therefore still carry {ability!r}"
            + (" (revoke them too with --include-wildcard)" if still else "")
        ]
    report(
        cli,
        store,
        f"tokens with ability {ability!r} revoked",
        mutation,
        wait=wait,
        as_json=as_json,
        extra=extra,
        data_extra={"wildcard_still_live": still, "wildcard_by_type": count.wildcard_by_type},
    )


@revoke.command(
    "all",
    epilog="\b\nExamples:\n"
    '  tokensync revoke all --before now --reason "signing key leaked" --dry-run\n'
    "  tokensync revoke all --before 2026-11-29T12:00:00Z --yes --wait",
)
@click.option("--before", required=True, help="'now', ISO 8601, or Unix seconds (not later).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required off a terminal).")
@reason_option
@dry_run_option
@wait_option
@json_option
@pass_cli
def revoke_all(
    cli: CliContext,
    *,
    before: str,
    yes: bool,
    reason: str | None,
    dry_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Revoke every token issued before a time (never a future one)."""
    from producer.dryrun import count_all

    store = open_store(cli)
    instant = parse_instant(before)
    count = count_all(store, instant)  # refuses a future --before before asking anything
    if dry_run:
        emit(as_json, count.to_json(), count.lines())
        return
    require_reason(reason, dry_run)
    audit = AuditContext.cli(reason)  # a reason that cannot be stored fails before asking
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(count.by_type.items())) or "none stored"
    _confirm(
        "revoke all",
        yes=yes,
        as_json=as_json,
        text=(
            f"This revokes EVERY token issued before {before} in every region, for good: "
            f"{count.total} stored token(s) ({kinds}), admin tokens included."
        ),
        question="Revoke them all?",
    )
    mutation = store.revoke_all(instant, audit=audit)
    report(
        cli, store, f"tokens issued before {before} revoked", mutation, wait=wait, as_json=as_json
    )
