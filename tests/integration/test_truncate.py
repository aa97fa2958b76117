"""TRUNCATE of Sanctum's table on PostgreSQL is a global revocation, in its own transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.store import TokenStore
from shared.events import GLOBAL_SCOPE

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def epochs(store: TokenStore) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT scope, before_ms FROM tokensync_outbox WHERE kind = 'epoch'")
        ).all()
    return [(r.scope, r.before_ms) for r in rows]


def test_truncate_on_postgresql_publishes_one_global_epoch_covering_every_token(
    pg_store: TokenStore,
) -> None:
    issued = [pg_store.issue(USER, i, f"t{i}") for i in range(3)]
    with pg_store.engine.connect() as conn:
        last_issue = conn.execute(
            sa.text("SELECT max(issued_at_ms) FROM tokensync_outbox WHERE op = 'issued'")
        ).scalar_one()
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE personal_access_tokens"))
    [(scope, before_ms)] = epochs(pg_store)
    assert GLOBAL_SCOPE == scope
    assert before_ms > last_issue
    assert len(issued) == 3
    with pg_store.engine.connect() as conn:
        assert 0 == conn.execute(sa.text("SELECT count(*) FROM tokensync_token_meta")).scalar()


def test_a_rolled_back_truncate_publishes_nothing(pg_store: TokenStore) -> None:
    pg_store.issue(USER, 1, "kept")
    with pg_store.engine.connect() as conn:
        tx = conn.begin()
        conn.execute(sa.text("TRUNCATE personal_access_tokens"))
        tx.rollback()
    assert [] == epochs(pg_store)
    assert 1 == len(pg_store.list_tokens(USER, 1))
