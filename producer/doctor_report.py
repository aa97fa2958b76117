"""What a ``tokensync doctor`` check answers (pass, warn or fail, what it saw, the fix)
and the exit code of a run."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["CLOCK_WARN_MS", "Check", "Outcome", "exit_code"]

CLOCK_WARN_MS = 250  # skew that eats into the staleness budget


class Outcome(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"  # noqa: S105 - an outcome, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One check's answer."""

    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``doctor --json`` prints."""
        return {
            "check": self.name,
            "outcome": str(self.outcome),
            "detail": self.detail,
            "fix": self.fix,
        }


def exit_code(checks: list[Check]) -> int:
    """0 when all pass, 1 on a warning, 2 on a failure."""
    outcomes = {c.outcome for c in checks}
    return 2 if Outcome.FAIL in outcomes else 1 if Outcome.WARN in outcomes else 0
