"""What a validation answers: the outcome, the principal, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.abilities import grants

__all__ = ["Outcome", "Principal", "ValidationResult"]


class Outcome(StrEnum):
    """What a validation says (the middleware and the gate map it to their own HTTP
    answers: Sanctum's 401/403, 419 or 403 for a CSRF mismatch, 503)."""

    VALID = "valid"
    INVALID = "invalid"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"

    @property
    def exit_code(self) -> int:
        """0, 1, 2 or 3 (``tokensync validate``)."""
        return {"valid": 0, "invalid": 1, "forbidden": 2, "unavailable": 3}[self.value]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token belongs to, and what it may do."""

    tokenable_type: str
    tokenable_id: str
    token_id: int | None
    name: str
    abilities: tuple[str, ...]
    expires_at_ms: int | None

    def can(self, ability: str) -> bool:
        """Sanctum's ``tokenCan`` (``shared.abilities.grants``)."""
        return grants(self.abilities, ability)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The answer for one token: outcome, principal when known, and why."""

    outcome: Outcome
    principal: Principal | None = None
    missing: tuple[str, ...] = ()
    freshness_s: float | None = None
    reason: str = ""
    source: str = "region"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (never the token)."""
        p = self.principal
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "source": self.source,
            "freshness_s": self.freshness_s,
            "missing": list(self.missing),
            "principal": None
            if p is None
            else {
                "tokenable_type": p.tokenable_type,
                "tokenable_id": p.tokenable_id,
                "token_id": p.token_id,
                "name": p.name,
                "abilities": list(p.abilities),
                "expires_at_ms": p.expires_at_ms,
            },
        }
