"""Attack findings (invariants 1 and 12 review): one stray row switches triggers off.

The triggers decide "is a tokensync transaction writing?" by whether *any* row is
visible in ``tokensync_suppress`` / ``tokensync_audit_marker``. tokensync removes its own
rows before commit, but a committed row (a Laravel app, SQL injection in it, or a manual
fix-up sharing the database user, which Laravel's migrations usually need) switches them
off for every later transaction, silently and for good.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.store import TokenStore

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_committed_suppress_row_does_not_silence_later_revocations(store: TokenStore) -> None:
    victim = store.issue(USER, 1, "victim")
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tokensync_suppress (id) VALUES (7)"))
    with store.engine.begin() as conn:  # later, the Laravel app logs the user out
        conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": victim.id})
    with store.engine.connect() as conn:
        revoked = conn.execute(
            sa.text("SELECT count(*) FROM tokensync_outbox WHERE op = 'revoked' AND token_id = :i"),
            {"i": victim.id},
        ).scalar()
    assert 1 == revoked, "the logout published nothing: the token stays valid in every region"


def test_a_committed_audit_marker_does_not_hide_later_sql_writes(store: TokenStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tokensync_audit_marker (id) VALUES (7)"))
    with store.engine.begin() as conn:  # a token for the admin principal, minted by plain SQL
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at)"
                " VALUES ('tokensync', 0, 'backdoor', :h, '[\"*\"]', CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)"
            ),
            {"h": "aa" * 32},
        )
    sql = [e for e in audit_log.read(store.engine) if e.actor_kind == "sql"]
    assert [("token.issue", "tokensync")] == [(e.action, e.tokenable_type) for e in sql], (
        "a '*' admin token was minted with plain SQL and the audit trail has no record of it"
    )
