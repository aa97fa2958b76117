"""Sanctum's ability rule, the one place it is decided: ``*`` or the exact ability.

Every surface asks through ``grants``: a principal's ``can`` (validators, the near-cache,
the ASGI middleware and the gate through ``shared.rules``), and the admin API's own checks
(``producer.authz``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

__all__ = ["WILDCARD", "grants"]

WILDCARD: Final = "*"
"""The ability that grants every ability (Sanctum's ``["*"]``)."""


def grants(abilities: Collection[str], ability: str) -> bool:
    """Whether an ability list grants ``ability``: Sanctum's ``can``, ``*`` or the exact
    (case-sensitive) ability."""
    return WILDCARD in abilities or ability in abilities
