"""Mass revocations against concurrent writers: the rows deleted silently are exactly
those the epoch covers, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.records import Mutation
from producer.store import TokenStore
from shared.events import principal_scope
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def issued_at_ms(store: TokenStore, token_hash: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT issued_at_ms FROM tokensync_outbox WHERE token_hash = :h"
                    " AND op = 'issued'"
                ),
                {"h": token_hash},
            ).scalar_one()
        )


def in_store(store: TokenStore, token_hash: str) -> bool:
    with store.engine.connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT count(*) FROM personal_access_tokens WHERE token = :h"),
                {"h": token_hash},
            ).scalar_one()
            == 1
        )


def revoked_events(store: TokenStore, token_hash: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM tokensync_outbox WHERE token_hash = :h AND op = 'revoked'"
                ),
                {"h": token_hash},
            ).scalar_one()
        )


def assert_deleted_silently_iff_covered(
    store: TokenStore, token_hash: str, mutation: Mutation
) -> None:
    assert mutation.before_ms is not None
    covered = issued_at_ms(store, token_hash) < mutation.before_ms
    deleted = not in_store(store, token_hash)
    assert 0 == revoked_events(store, token_hash)
    # deleted without a covering epoch = valid in every region forever (the bug);
    # covered but kept = the store and the regions disagree.
    assert (deleted, covered) in {(True, True), (False, False)}, (deleted, covered)


def run(target: object, box: list[object]) -> threading.Thread:
    def body() -> None:
        box.append(target())  # type: ignore[operator]

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_a_token_committed_during_revoke_principal_on_postgresql_is_revoked_or_kept(
    postgres_url: str,
) -> None:
    from producer.schema import create_engine, migrate

    engine = create_engine(postgres_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        store.issue(USER, 5, "old")
        scope = principal_scope(USER, 5)
        blocker = engine.connect()
        tx = blocker.begin()
        # Hold the epoch row, so revoke_principal stops between reading the clock and
        # deleting the rows, while another session issues a token to the same principal.
        blocker.execute(sa.text("INSERT INTO tokensync_epochs VALUES (:s, 0, 0)"), {"s": scope})
        revoked: list[object] = []
        revoking = run(lambda: store.revoke_principal(USER, 5), revoked)

        def waiting() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    ).scalar_one()
                )

        wait_for(lambda: waiting() >= 1, what="revoke_principal waiting")
        issued: list[object] = []
        issuing = run(lambda: store.issue(USER, 5, "late"), issued)
        issuing.join(timeout=2)
        tx.rollback()
        blocker.close()
        revoking.join(timeout=30)
        issuing.join(timeout=30)
        [mutation] = revoked
        [late] = issued
        assert isinstance(mutation, Mutation)
        assert_deleted_silently_iff_covered(store, late.token_hash, mutation)  # type: ignore[attr-defined]
        assert not any(t.name == "old" for t in store.list_tokens(USER, 5))
    finally:
        engine.dispose()


def test_a_token_committed_during_revoke_principal_on_sqlite_is_revoked_or_kept(
    sqlite_url: str,
) -> None:
    from producer.schema import create_engine, migrate

    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        store.issue(USER, 5, "old")
        # SQLite serialises writers: a Laravel process holds the write lock while
        # revoke_principal has read the clock and waits to write.
        laravel = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=30)
        laravel.execute("BEGIN IMMEDIATE")
        revoked: list[object] = []
        revoking = run(lambda: store.revoke_principal(USER, 5), revoked)
        time.sleep(0.5)  # revoke_principal reads the clock, then waits for the write lock
        now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
        laravel.execute(
            "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
            " abilities, created_at, updated_at) VALUES (?, 5, 'late', ?, '[\"*\"]', ?, ?)",
            (USER, "c" * 64, now, now),
        )
        laravel.execute("COMMIT")
        laravel.close()
        revoking.join(timeout=30)
        [mutation] = revoked
        assert isinstance(mutation, Mutation)
        assert_deleted_silently_iff_covered(store, "c" * 64, mutation)
    finally:
        engine.dispose()


def test_a_token_inserted_during_revoke_principal_on_mariadb_is_revoked_or_kept(
    mysql_url: str,
) -> None:
    from producer.schema import create_engine, migrate

    engine = create_engine(mysql_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        store.issue(USER, 5, "old")
        # A Laravel process inserts a row (its trigger stamps the issue time) and has not
        # committed yet when revoke_principal starts; it commits while the revocation runs.
        laravel = engine.connect()
        tx = laravel.begin()
        now = utcnow()
        laravel.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, 5, 'late', :h, '[\"*\"]', :n, :n)"
            ),
            {"t": USER, "h": "c" * 64, "n": now},
        )
        revoked: list[object] = []
        revoking = run(lambda: store.revoke_principal(USER, 5), revoked)

        def waiting() -> int:
            # InnoDB refreshes its information_schema snapshot only after 0.1 s without a
            # read: polled every 20 ms it would show the state at the first poll forever.
            time.sleep(0.15)
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM information_schema.innodb_trx"
                            " WHERE trx_state = 'LOCK WAIT'"
                        )
                    ).scalar_one()
                )

        wait_for(lambda: waiting() >= 1, what="revoke_principal waiting")
        time.sleep(0.2)
        tx.commit()
        laravel.close()
        revoking.join(timeout=30)
        [mutation] = revoked
        assert isinstance(mutation, Mutation)
        assert_deleted_silently_iff_covered(store, "c" * 64, mutation)
        assert not any(t.name == "old" for t in store.list_tokens(USER, 5))
    finally:
        engine.dispose()
