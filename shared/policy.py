"""How a validator decides: the staleness budget, what it does when its region cannot
answer (deny, or ask the token store through a ``Fallback``), and token lifetimes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.errors import ConfigError
from shared.outcomes import Principal
from shared.rules import Freshness
from shared.settings import Settings

__all__ = ["Fallback", "FallbackAnswer", "Policy"]


@dataclass(frozen=True, slots=True)
class FallbackAnswer:
    """What the token store says about a token (Sanctum's way): its row, its issue time
    and the newest epoch that applies to it, or nothing."""

    principal: Principal | None
    created_at_ms: int | None = None
    issued_at_ms: int | None = None
    epoch_ms: int = 0
    """The newest epoch the store holds for the token's scopes (``shared.rules``)."""
    now_ms: int | None = None
    """The store's clock when it answered: the answer is judged with it, since the
    validator's own clock may be what made the region look unavailable (None: the
    validator's clock)."""


class Fallback(Protocol):
    """Asks the token store directly (used when the region is unavailable)."""

    def lookup(self, token: str) -> FallbackAnswer:
        """The token's principal from the store, or ``FallbackAnswer(None)``."""
        ...


@dataclass(frozen=True)
class Policy:
    """How a validator decides: staleness budget, what to do when unavailable, lifetimes."""

    staleness_budget_s: float = 5.0
    on_unavailable: Literal["deny", "fallback"] = "deny"
    expiration_minutes: int | None = None
    clock_skew_allowance_s: float = 1.0
    server_check_interval_s: float = 0.05
    """How often a synchronous validator's connection re-reads its server's replication id
    (``shared.script_link``; also on every new connection); 0: inside the script, every
    call. Under the staleness budget."""
    _freshness: Freshness = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_unavailable not in ("deny", "fallback"):
            raise ConfigError(
                f"on_unavailable must be deny or fallback, not {self.on_unavailable!r}"
            )
        interval = self.server_check_interval_s
        if not (math.isfinite(interval) and 0 <= interval < self.staleness_budget_s):
            raise ConfigError(
                f"server check interval {interval!r} must be zero or more finite seconds, "
                f"under the staleness budget ({self.staleness_budget_s!r} s)"
            )
        # Built (and so checked: a nan, infinite or negative budget is refused) once.
        freshness = Freshness(self.staleness_budget_s, self.clock_skew_allowance_s)
        object.__setattr__(self, "_freshness", freshness)

    @property
    def freshness(self) -> Freshness:
        """The budget and skew allowance as the rule set takes them."""
        return self._freshness

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Policy:
        """The policy the settings describe, with per-call overrides."""
        base = cls(
            staleness_budget_s=settings.staleness_budget_s,
            expiration_minutes=settings.token_expiration_minutes,
            clock_skew_allowance_s=settings.clock_skew_allowance_s,
            server_check_interval_s=settings.server_check_interval_s,
        )
        return dataclasses.replace(base, **overrides) if overrides else base
