"""``tokensync validate``: validate a token against one region, as a service would."""

from __future__ import annotations

import sys

import click

from shared.cli import CliContext, emit, json_option, pass_cli
from shared.validator import Outcome, Validator

__all__ = ["validate"]


@click.command(
    epilog="\b\nExamples:\n"
    "  tokensync validate - --region eu --ability orders:read < token.txt\n"
    '  tokensync validate "$TOKEN" --region eu --json',
)
@click.argument("token")
@click.option("--region", required=True, help="Region whose Redis answers.")
@click.option("--ability", "abilities", multiple=True, help="Required ability (repeatable).")
@click.option("--any", "any_mode", is_flag=True, help="One of the abilities suffices.")
@json_option
@pass_cli
def validate(
    cli: CliContext,
    *,
    token: str,
    region: str,
    abilities: tuple[str, ...],
    any_mode: bool,
    as_json: bool,
) -> None:
    """Validate TOKEN ('-' reads it from stdin, which keeps it out of shell history).

    Exit codes: 0 valid, 1 invalid, 2 forbidden, 3 unavailable.
    """
    presented = sys.stdin.readline().strip() if token == "-" else token  # noqa: S105
    validator = Validator.from_settings(cli.settings, region)
    try:
        result = validator.validate(presented, abilities, "any" if any_mode else "all")
    finally:
        validator.close()
    if result.outcome is Outcome.VALID and result.principal is not None:
        p = result.principal
        text = (
            f"valid: {p.tokenable_type}:{p.tokenable_id} token {p.token_id} ({p.name}), "
            f"abilities {','.join(p.abilities) or '-'}"
        )
    elif result.outcome is Outcome.FORBIDDEN:
        text = f"forbidden: lacks {', '.join(result.missing)}"
    else:
        text = f"{result.outcome.value}: {result.reason}"
    if result.freshness_s is not None and not as_json:
        text += f" (region {region} fresh within {result.freshness_s:.2f} s)"
    emit(as_json, {"region": region, **result.to_json()}, text)
    raise click.exceptions.Exit(result.outcome.exit_code)
