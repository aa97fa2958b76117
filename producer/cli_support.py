"""What the authority's commands share: one-line (or JSON) errors with fixed exit codes,
the store for a command, the report of a mutation with its receipt, common options.

Exit codes: 0 done, 1 failed or not found, 2 bad input or a refused request (a future
``--before``, a missing ``--yes`` or ``--reason``), 4 a receipt not complete in time.
With ``--json`` errors are JSON on stdout: ``{"error": ..., "code": ..., "exit_code": n}``.
"""

from __future__ import annotations

import json
import os
from typing import Any, NoReturn

import click

from producer.inputs import MAX_ID
from producer.records import Mutation
from producer.store import TokenStore
from shared import tracing
from shared.cli import CliContext, emit
from shared.errors import NotFoundError, TokenSyncError, UsageError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INCOMPLETE",
    "EXIT_USAGE",
    "Command",
    "Group",
    "TokenId",
    "dry_run_option",
    "fail",
    "nonempty",
    "open_store",
    "reason_option",
    "report",
    "require_reason",
    "wait_option",
]

EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 1, 2, 4


def fail(as_json: bool, message: str, code: str, exit_code: int) -> NoReturn:
    """End the command: one line on stderr, or a JSON error on stdout; ``exit_code``."""
    # drivers' messages span several lines
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    if as_json:
        click.echo(json.dumps({"error": message, "code": code, "exit_code": exit_code}))
    else:
        click.echo(f"tokensync: error: {message}", err=True)
    raise click.exceptions.Exit(exit_code)


def classify(error: TokenSyncError) -> tuple[str, int]:
    """The JSON ``code`` and exit code of a failure."""
    if isinstance(error, UsageError):
        return "usage", EXIT_USAGE
    if isinstance(error, NotFoundError):
        return "not_found", EXIT_FAILED
    return type(error).__name__.removesuffix("Error").lower() or "error", EXIT_FAILED


class Command(click.Command):
    """A command whose errors are one line (or JSON with ``--json``) and a fixed exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        wants_json = "--json" in args  # parsing consumes ``args``
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:
            if not wants_json:
                raise
            fail(True, e.format_message(), "usage", e.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        as_json = bool(ctx.params.get("as_json"))
        try:
            return super().invoke(ctx)
        except TokenSyncError as e:
            code, exit_code = classify(e)
            fail(as_json, str(e), code, exit_code)


class Group(click.Group):
    command_class = Command


class TokenId(click.ParamType):
    """A token id: a whole number from 1 to BIGINT's maximum. The error never repeats what
    was given (a responder may paste the token itself where its id goes)."""

    name = "token_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip()
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
        if 1 <= number <= MAX_ID:
            return number
        raise click.BadParameter(
            f"a token id is a whole number from 1 to {MAX_ID} (the value is not shown: "
            "a token itself goes on stdin with --text -, never on the command line)",
            ctx=ctx,
            param=param,
        )


def open_store(cli: CliContext) -> TokenStore:
    """The store of the settings, closed when the command ends."""
    store = TokenStore.from_settings(cli.settings)
    click.get_current_context().call_on_close(store.close)
    tracing.configure("tokensync-cli", cli.settings.topic_prefix, os.environ)
    return store


def report(
    cli: CliContext,
    store: TokenStore,
    what: str,
    mutation: Mutation,
    *,
    wait: bool,
    as_json: bool,
    extra: list[str] | None = None,
    data_extra: dict[str, Any] | None = None,
) -> None:
    """Print a mutation (seq, rows removed, audit record); with ``wait`` the per-region
    receipt, attached to the audit record when complete (exit 4 when it is not)."""
    data: dict[str, Any] = {**mutation.to_json(), **(data_extra or {})}
    lines = [f"{what}: seq {mutation.seq}, {mutation.removed} row(s) removed from the store"]
    lines += extra or []
    if mutation.audit_id is not None:
        lines.append(f"audit record {mutation.audit_id}")
    if wait:
        from producer.audit import attach_complete_receipt
        from producer.receipts import wait_for_receipt

        receipt = wait_for_receipt(cli.settings, store, mutation.seq)
        data["receipt"] = receipt.to_json()
        lines.append(receipt.summary())
        attach_complete_receipt(store.engine, mutation.audit_id, receipt)
        emit(as_json, data, lines)
        if not receipt.complete:
            raise click.exceptions.Exit(EXIT_INCOMPLETE)
        return
    emit(as_json, data, lines)


def nonempty(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    items = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, str) and not v.strip() for v in items):
        raise click.BadParameter("must not be empty")
    return value


wait_option = click.option(
    "--wait", is_flag=True, help="Wait until every region enforces it and print the receipt."
)
reason_option = click.option(
    "--reason", default=None, help="Why (kept in the audit record; required for mass revocations)."
)
dry_run_option = click.option(
    "--dry-run",
    is_flag=True,
    help="Only count the stored tokens the scope covers now, per principal type.",
)


def require_reason(reason: str | None, dry_run: bool) -> None:
    from producer.audit import has_reason

    if not dry_run and not has_reason(reason):
        raise UsageError("a mass revocation needs --reason TEXT (it is kept in the audit trail)")
