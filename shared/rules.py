"""The one rule set every validating surface applies: freshness, expiry, epochs, abilities.

Regions (``shared.validator`` reading ``validate.lua``'s reply), the near-cache,
the store fallback and the admin API's own caller check (``producer.token_check``)
all decide through these functions, so that they can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.abilities import grants
from shared.errors import ConfigError
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scopes
from shared.outcomes import Outcome, Principal, ValidationResult

__all__ = [
    "Freshness",
    "Mode",
    "TokenRecord",
    "answerable_window",
    "epoch_scopes",
    "expired",
    "grants",
    "judge",
    "missing_abilities",
    "region_unavailable_reason",
    "revoked_by_epoch",
]

Mode = Literal["all", "any"]


@dataclass(frozen=True, slots=True)
class Freshness:
    """How old a region's certified state may be: the staleness budget and the clock skew
    tolerated between the relay (it stamps heartbeats) and a validator."""

    staleness_budget_s: float = 5.0
    clock_skew_allowance_s: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.staleness_budget_s) and self.staleness_budget_s > 0):
            raise ConfigError(
                f"staleness budget {self.staleness_budget_s!r} must be positive, finite seconds"
            )
        if not (math.isfinite(self.clock_skew_allowance_s) and self.clock_skew_allowance_s >= 0):
            raise ConfigError(
                f"clock skew allowance {self.clock_skew_allowance_s!r} must be finite seconds"
                " and not negative"
            )


def region_unavailable_reason(
    ready: bool, oldest_heartbeat_ms: int | None, now_ms: int, freshness: Freshness
) -> str | None:
    """Why a region may not answer *valid* now (None: it may).

    A heartbeat stamped T certifies every change committed before T; the oldest
    partition heartbeat must be neither older than the budget nor ahead of this
    validator's clock beyond the skew allowance (a relay clock stepped forward must
    not pin a region "fresh").
    """
    if not ready:
        return "not_ready"
    if oldest_heartbeat_ms is None or oldest_heartbeat_ms < 0:
        return "no_heartbeat"
    skew_ms = freshness.clock_skew_allowance_s * 1000
    if oldest_heartbeat_ms - now_ms > skew_ms:
        return "clock_ahead"
    if now_ms - oldest_heartbeat_ms > freshness.staleness_budget_s * 1000 + skew_ms:
        return "stale"
    return None


def answerable_window(
    ready: bool, oldest_heartbeat_ms: int | None, freshness: Freshness
) -> tuple[int, int] | None:
    """The validator clock readings (ms, inclusive) at which a region in this state may
    answer *valid*, or None if at none: ``region_unavailable_reason`` as an interval,
    for callers that check many times against one state (the near-cache)."""
    if not ready or oldest_heartbeat_ms is None or oldest_heartbeat_ms < 0:
        return None
    skew_ms = freshness.clock_skew_allowance_s * 1000
    lowest = math.ceil(oldest_heartbeat_ms - skew_ms)
    highest = math.floor(oldest_heartbeat_ms + freshness.staleness_budget_s * 1000 + skew_ms)
    return lowest, highest


def expired(
    expires_at_ms: int | None,
    created_at_ms: int | None,
    expiration_minutes: int | None,
    now_ms: int,
) -> bool:
    """Sanctum's two lifetimes: the token's ``expires_at``, and the global expiration
    (``TOKENSYNC_TOKEN_EXPIRATION`` minutes) counted from ``created_at``; both must pass."""
    if expires_at_ms is not None and expires_at_ms <= now_ms:
        return True
    return bool(
        expiration_minutes
        and created_at_ms is not None
        and created_at_ms + expiration_minutes * 60_000 <= now_ms
    )


def epoch_scopes(
    tokenable_type: str, tokenable_id: str | int, abilities: Iterable[str]
) -> tuple[str, ...]:
    """Every epoch scope that applies to a token: global, its principal, each ability
    its list holds literally (``validate.lua`` builds the same list)."""
    return (
        GLOBAL_SCOPE,
        *principal_scopes(tokenable_type, tokenable_id),
        *(ability_scope(a) for a in abilities),
    )


def revoked_by_epoch(issued_at_ms: int | None, epoch_ms: int) -> bool:
    """Whether the newest applicable epoch (0: none) revokes a token issued at
    ``issued_at_ms`` (unknown counts as issued at the beginning of time)."""
    return bool(epoch_ms) and (issued_at_ms or 0) < epoch_ms


def missing_abilities(principal: Principal, required: Sequence[str], mode: Mode) -> tuple[str, ...]:
    """The required abilities the principal lacks (``all``: Sanctum's ``abilities``
    middleware), or all of them if it has none (``any``: its ``ability`` middleware);
    empty means allowed."""
    if not required:
        return ()
    missing = tuple(a for a in required if not principal.can(a))
    if mode == "any":
        return missing if len(missing) == len(required) else ()
    return missing


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a surface knows about one live token: who, what, and its three times."""

    principal: Principal
    created_at_ms: int | None
    issued_at_ms: int | None


def judge(
    record: TokenRecord | None,
    epoch_ms: int,
    now_ms: int,
    *,
    required: Sequence[str] = (),
    mode: Mode = "all",
    expiration_minutes: int | None = None,
    source: str,
    freshness_s: float | None = None,
) -> ValidationResult:
    """The answer for a token (None: unknown or revoked row) given the newest epoch that
    applies to it: *invalid* (unknown, revoked, expired), *forbidden*, or *valid*."""
    if record is None:
        return ValidationResult(
            Outcome.INVALID, freshness_s=freshness_s, reason="unknown", source=source
        )
    reason = None
    if revoked_by_epoch(record.issued_at_ms, epoch_ms):
        reason = "revoked"
    elif expired(record.principal.expires_at_ms, record.created_at_ms, expiration_minutes, now_ms):
        reason = "expired"
    if reason is not None:
        return ValidationResult(
            Outcome.INVALID, freshness_s=freshness_s, reason=reason, source=source
        )
    missing = missing_abilities(record.principal, required, mode)
    if missing:
        return ValidationResult(
            Outcome.FORBIDDEN, record.principal, missing, freshness_s, "ability", source
        )
    return ValidationResult(Outcome.VALID, record.principal, freshness_s=freshness_s, source=source)
