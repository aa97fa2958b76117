"""The admin rules as pure functions: admin principals, holding abilities, no escalation."""

from __future__ import annotations

import datetime as dt

import pytest

from producer.authz import ADMIN_ABILITIES, Action, holds, is_admin_principal, mint_denial
from shared.errors import ConfigError
from shared.settings import Settings

ADMINS = ("tokensync",)


def test_only_configured_types_are_admin_principals() -> None:
    assert is_admin_principal("tokensync", ADMINS)
    assert not is_admin_principal("App\\Models\\User", ADMINS)
    assert ("tokensync",) == Settings.from_env({}).admin_types
    assert ("a", "b") == Settings.from_env({"TOKENSYNC_ADMIN_TYPES": " a , b "}).admin_types
    with pytest.raises(ConfigError, match="ADMIN_TYPES"):
        Settings.from_env({"TOKENSYNC_ADMIN_TYPES": " , "})


def test_the_wildcard_holds_every_admin_ability_and_nothing_else_does() -> None:
    assert all(holds(["*"], a) for a in ADMIN_ABILITIES)
    assert [a for a in ADMIN_ABILITIES if holds(["tokens:read"], a)] == ["tokens:read"]


@pytest.mark.parametrize(
    ("caller", "action", "target_type", "target", "allowed"),
    [
        (["tokens:issue"], Action.ISSUE, "App\\Models\\User", ["*"], True),
        (["tokens:issue"], Action.ROTATE, "App\\Models\\User", ["*"], False),
        (["tokens:rotate"], Action.ROTATE, "App\\Models\\User", ["*"], True),
        (["tokens:issue"], Action.ISSUE, "tokensync", ["tokens:issue"], True),
        (["tokens:issue"], Action.ISSUE, "tokensync", ["tokens:revoke"], False),
        (["tokens:issue", "tokens:revoke"], Action.ISSUE, "tokensync", ["tokens:revoke"], True),
        ([*ADMIN_ABILITIES], Action.ISSUE, "tokensync", ["*"], False),
        (["*"], Action.ISSUE, "tokensync", ["*"], True),
        (["tokens:issue"], Action.ISSUE, "App\\Models\\User", ["audit:read"], False),
    ],
)
def test_minting_never_grants_more_admin_power_than_the_caller_holds(
    caller: list[str], action: Action, target_type: str, target: list[str], allowed: bool
) -> None:
    assert allowed == (mint_denial(caller, action, target_type, target, ADMINS) is None)


HOUR = dt.datetime(2026, 11, 29, 13, 0)


@pytest.mark.parametrize(
    ("target_type", "target", "target_expires", "allowed"),
    [
        ("tokensync", ["tokens:read"], None, False),
        ("tokensync", ["tokens:read"], HOUR + dt.timedelta(seconds=1), False),
        ("tokensync", ["tokens:read"], HOUR, True),
        ("tokensync", ["*"], None, False),
        ("tokensync", ["reports:view"], None, True),  # no admin power to outlive
        ("App\\Models\\User", ["*"], None, True),  # app tokens are not bounded
    ],
)
def test_an_expiring_admin_token_mints_no_admin_token_that_outlives_it(
    target_type: str, target: list[str], target_expires: dt.datetime | None, allowed: bool
) -> None:
    denial = mint_denial(["*"], Action.ISSUE, target_type, target, ADMINS, HOUR, target_expires)
    assert allowed == (denial is None), denial
    assert mint_denial(["*"], Action.ISSUE, target_type, target, ADMINS, None, None) is None
