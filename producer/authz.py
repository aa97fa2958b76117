"""Who may do what on the admin API: admin principals, admin abilities, no escalation.

Pure functions over ability lists, so the rules are tested without a server.
Only tokens of an admin principal (``tokenable_type`` in ``TOKENSYNC_ADMIN_TYPES``,
default ``tokensync``) drive the admin API; ``*`` on such a token holds every admin
ability. Nobody mints or rotates more admin power than they hold.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Sequence

from shared.abilities import WILDCARD, grants

__all__ = [
    "ADMIN_ABILITIES",
    "Action",
    "grants_admin_power",
    "holds",
    "is_admin_principal",
    "mint_denial",
]

#: Every ability the admin API knows; ``*`` on an admin principal holds them all.
ADMIN_ABILITIES: tuple[str, ...] = (
    "tokens:issue",
    "tokens:read",
    "tokens:revoke",
    "tokens:rotate",
    "revocations:mass",
    "regions:read",
    "regions:write",
    "audit:read",
)


class Action(enum.Enum):
    """An act that produces a token (and its plaintext) for the caller."""

    ISSUE = "tokens:issue"
    ROTATE = "tokens:rotate"


def is_admin_principal(tokenable_type: str, admin_types: Collection[str]) -> bool:
    """Whether tokens of ``tokenable_type`` may drive the admin API."""
    return tokenable_type in admin_types


def holds(abilities: Sequence[str], ability: str) -> bool:
    """Whether an ability list grants ``ability`` (``shared.abilities.grants``)."""
    return grants(abilities, ability)


def grants_admin_power(
    tokenable_type: str, abilities: Sequence[str], admin_types: Collection[str]
) -> bool:
    """Whether a token of ``tokenable_type`` with ``abilities`` can drive the admin API."""
    return is_admin_principal(tokenable_type, admin_types) and any(
        grants(abilities, a) for a in ADMIN_ABILITIES
    )


def mint_denial(  # noqa: PLR0917 (one rule over the caller and the target)
    caller_abilities: Sequence[str],
    action: Action,
    target_type: str,
    target_abilities: Sequence[str],
    admin_types: Collection[str],
    caller_expires_at: dt.datetime | None = None,
    target_expires_at: dt.datetime | None = None,
) -> str | None:
    """Why a caller may not issue or rotate a token like the target, or None if it may.

    The caller needs the action's own ability; a target of an admin principal, or one
    that lists admin abilities, needs the caller to hold each of them, and ``*`` on
    an admin principal needs ``*``. A caller whose token expires may only produce a
    token with admin power (an admin principal's token holding an admin ability or
    ``*``) that expires no later than its own. App tokens (any app abilities, ``*``
    included) of non-admin principals need only the action's ability. Expiry times are
    naive UTC, as the store keeps them.
    """
    if not holds(caller_abilities, action.value):
        return f"the token lacks the ability {action.value!r}"
    admin_target = is_admin_principal(target_type, admin_types)
    wildcard_target = grants(target_abilities, WILDCARD)
    if admin_target and wildcard_target and not grants(caller_abilities, WILDCARD):
        return "only a '*' admin token may mint a '*' admin token"
    lacking = [
        a for a in target_abilities if a in ADMIN_ABILITIES and not holds(caller_abilities, a)
    ]
    if lacking:
        return f"the token would grant admin abilities the caller lacks: {', '.join(lacking)}"
    if (
        caller_expires_at is not None
        and grants_admin_power(target_type, target_abilities, admin_types)
        and (target_expires_at is None or target_expires_at > caller_expires_at)
    ):
        return (
            "an admin token may not outlive the caller's own: give it an expiry no later "
            f"than {caller_expires_at.isoformat(timespec='seconds')}Z"
        )
    return None
