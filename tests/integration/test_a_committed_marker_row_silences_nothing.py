"""A row committed into ``tokensync_suppress`` / ``tokensync_audit_marker`` silences nothing.

The triggers once decided "is a tokensync transaction writing?" by whether *any* row was
visible there, so one committed row (a Laravel app, SQL injection in it, or a manual
fix-up sharing the database user) switched them off for good. Marks now belong to one
transaction (``producer.txmarks``).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer import txmarks
from producer.schema import create_engine, migrate
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


def test_marker_rows_naming_later_transactions_silence_nothing_on_postgresql(
    postgres_url: str,
) -> None:
    """A mark holds the txid of its transaction; a row naming a txid yet to come (which a
    database user can guess) must not silence that transaction either."""
    engine = create_engine(postgres_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        victim = store.issue(USER, 1, "victim")
        with engine.begin() as conn:
            for table in ("tokensync_suppress", "tokensync_audit_marker"):
                conn.execute(
                    sa.text(
                        f"INSERT INTO {table} (id)"  # noqa: S608 - constants
                        " SELECT txid_current() + g FROM generate_series(1, 50) g"
                    )
                )
        with engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": victim.id}
            )
        with engine.connect() as conn:
            revoked = conn.execute(
                sa.text(
                    "SELECT count(*) FROM tokensync_outbox WHERE op = 'revoked' AND token_id = :i"
                ),
                {"i": victim.id},
            ).scalar()
        assert 1 == revoked
        sql = [(e.action, e.token_id) for e in audit_log.read(engine) if e.actor_kind == "sql"]
        assert [("token.revoke", victim.id)] == sql
    finally:
        store.close()


def _revocations(engine: sa.Engine, token_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM tokensync_outbox WHERE op = 'revoked' AND token_id = :i"
                ),
                {"i": token_id},
            ).scalar_one()
        )


def test_on_mysql_a_mark_silences_neither_another_session_nor_its_own_rolled_back_session(
    mysql_url: str,
) -> None:
    """On MySQL/MariaDB a mark is a random token in a row of the transaction and in the
    session's variable: a concurrent session (no variable, the row unseen) publishes its
    deletes, and so does the marking session once its transaction rolled back (the
    variable stays on the pooled connection, the row is gone)."""
    engine = create_engine(mysql_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        first, second = store.issue(USER, 1, "first"), store.issue(USER, 1, "second")
        with engine.connect() as marking:
            tx = marking.begin()
            txmarks.mark(marking, txmarks.SUPPRESS)
            with engine.begin() as other:
                other.execute(
                    sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": first.id}
                )
            tx.rollback()
            with marking.begin():
                left = marking.execute(sa.text("SELECT @tokensync_suppress")).scalar()
                assert left is not None, "the session variable outlives the rollback"
                marking.execute(
                    sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": second.id}
                )
        assert (1, 1) == (_revocations(engine, first.id), _revocations(engine, second.id))
    finally:
        store.close()


def test_the_stores_own_acts_leave_no_sql_records_and_no_gaps(store: TokenStore) -> None:
    """The store's transactions are silent to the triggers by their own mark only: no
    ``sql`` record, no per-row revocation under an epoch, and (SQLite takes back what the
    triggers wrote) no hole in the outbox seqs or the audit ids."""
    for n in range(3):
        store.issue(USER, 1, f"t{n}")
    store.revoke_principal(USER, 1)
    store.issue(USER, 2, "after")
    entries = audit_log.read(store.engine)
    assert [] == [e for e in entries if e.actor_kind == "sql"]
    ids = [e.id for e in entries]
    assert list(range(ids[0], ids[0] + len(ids))) == ids
    with store.engine.connect() as conn:
        ops = conn.execute(sa.text("SELECT seq, op FROM tokensync_outbox ORDER BY seq")).all()
    assert ["issued", "issued", "issued", "epoch", "issued"] == [op for _seq, op in ops]
    seqs = [seq for seq, _op in ops]
    assert list(range(seqs[0], seqs[0] + len(seqs))) == seqs
