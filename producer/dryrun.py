"""Dry runs of mass revocations: how many stored tokens a scope covers now, per principal type.

Counts what ``TokenStore.revoke_principal`` / ``revoke_ability`` / ``revoke_all``
would remove, without writing anything, plus (for an ability) the live tokens that
hold ``*`` and therefore still carry it after the epoch.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from producer.clock import to_ms, utcnow
from producer.epochs import FUTURE_SKEW_MS, ability_candidates, live_condition
from producer.models import PAT
from producer.store import TokenStore
from producer.tokens import decode_abilities
from shared.errors import UsageError
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scope

__all__ = ["ScopeCount", "count_ability", "count_all", "count_principal"]


@dataclass(frozen=True)
class ScopeCount:
    """Stored tokens a revocation scope covers, by principal type."""

    scope: str
    by_type: dict[str, int]
    wildcard_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Tokens the scope covers."""
        return sum(self.by_type.values())

    @property
    def wildcard_total(self) -> int:
        """Live tokens outside the scope that hold ``*`` (ability scopes only)."""
        return sum(self.wildcard_by_type.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "dry_run": True,
            "scope": self.scope,
            "tokens": self.total,
            "by_type": self.by_type,
            "wildcard_tokens": self.wildcard_total,
            "wildcard_by_type": self.wildcard_by_type,
        }

    def lines(self) -> list[str]:
        """For people: the total, then one line per principal type."""
        out = [f"dry run: {self.scope} covers {self.total} stored token(s); nothing was revoked"]
        out += [f"  {kind}: {n}" for kind, n in sorted(self.by_type.items())]
        if self.wildcard_by_type:
            out.append(
                f"  plus {self.wildcard_total} live token(s) holding '*' (--include-wildcard):"
            )
            out += [f"    {kind}: {n}" for kind, n in sorted(self.wildcard_by_type.items())]
        return out


def _by_type(conn: sa.Connection, where: sa.ColumnElement[bool]) -> dict[str, int]:
    rows = conn.execute(
        sa.select(PAT.c.tokenable_type, sa.func.count()).where(where).group_by(PAT.c.tokenable_type)
    ).all()
    return {str(kind): int(n) for kind, n in rows}


def count_principal(store: TokenStore, tokenable_type: str, tokenable_id: int | str) -> ScopeCount:
    """Tokens of one principal."""
    owner = store.owner_id(tokenable_id)
    with store.engine.connect() as conn:
        where = (PAT.c.tokenable_type == tokenable_type) & store.owner_match(owner)
        return ScopeCount(principal_scope(tokenable_type, owner), _by_type(conn, where))


def _matching(conn: sa.Connection, where: sa.ColumnElement[bool], ability: str) -> dict[int, str]:
    """Token id -> principal type of the rows ``where`` selects whose abilities hold
    ``ability`` (as decoded JSON, so a look-alike substring never counts)."""
    rows = conn.execute(
        sa.select(PAT.c.id, PAT.c.tokenable_type, PAT.c.abilities).where(where)
    ).all()
    return {r.id: str(r.tokenable_type) for r in rows if ability in decode_abilities(r.abilities)}


def count_ability(store: TokenStore, ability: str) -> ScopeCount:
    """Tokens listing ``ability`` literally, and live tokens holding ``*`` besides."""
    if not ability.strip():
        raise UsageError("an ability must be a non-empty string")
    with store.engine.connect() as conn:
        literal = _matching(conn, ability_candidates(ability), ability)
        live = live_condition(utcnow(), store.expiration_minutes)
        wildcard = _matching(conn, ability_candidates("*") & live, "*")
    return ScopeCount(
        ability_scope(ability),
        dict(Counter(literal.values())),
        dict(Counter(kind for i, kind in wildcard.items() if i not in literal)),
    )


def count_all(store: TokenStore, before: dt.datetime | None) -> ScopeCount:
    """Tokens issued before ``before`` (None: now); a future time is refused as by revoke."""
    with store.engine.connect() as conn:
        now_ms = store.now_ms(conn)
        before_ms = now_ms + 1 if before is None else to_ms(before)
        if before_ms > now_ms + FUTURE_SKEW_MS:
            raise UsageError(
                "--before is in the future: it would revoke tokens not issued yet "
                "(use 'now' or an earlier time)"
            )
        return ScopeCount(GLOBAL_SCOPE, _by_type(conn, store.covered(before_ms, now_ms)))
