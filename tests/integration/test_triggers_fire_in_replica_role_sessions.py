"""PostgreSQL triggers fire in session_replication_role=replica sessions too (ENABLE ALWAYS)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.schema import create_engine, migrate
from producer.store import TokenStore

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_delete_in_a_replica_role_session_still_publishes_the_revocation(
    pg_store: TokenStore,
) -> None:
    """``SET session_replication_role = replica`` is the usual way a Laravel seeder or an
    import script skips foreign-key checks (and what pg_restore --disable-triggers and
    logical replication do). Ordinary (ENABLE) triggers do not fire in such a session, so
    a token deleted there publishes nothing: the store forgot it, every region keeps it
    valid. Triggers that must always fire are ``ENABLE ALWAYS``."""
    victim = pg_store.issue(USER, 1, "victim")
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": victim.id})
    with pg_store.engine.connect() as conn:
        revoked = conn.execute(
            sa.text("SELECT count(*) FROM tokensync_outbox WHERE op = 'revoked' AND token_id = :i"),
            {"i": victim.id},
        ).scalar()
    assert 1 == revoked, "the delete reached no outbox row: the token stays valid everywhere"


def test_plain_sql_in_a_replica_role_session_is_audited_and_an_epoch_still_publishes(
    pg_store: TokenStore,
) -> None:
    """The audit trigger and the epoch trigger fire in a replica-role session as well."""
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at)"
                " VALUES (:t, 3, 'seeded', :h, '[\"*\"]', now(), now())"
            ),
            {"t": USER, "h": "5e" * 32},
        )
        conn.execute(
            sa.text(
                "INSERT INTO tokensync_epochs (scope, before_ms, updated_at_ms)"
                " VALUES ('global', 1, 1)"
            )
        )
    sql = [(e.action, e.tokenable_type) for e in audit_log.read(pg_store.engine)]
    assert ("token.issue", USER) in sql
    assert ("revoke.epoch", None) in sql
    with pg_store.engine.connect() as conn:
        epochs = conn.execute(
            sa.text("SELECT count(*) FROM tokensync_outbox WHERE kind = 'epoch'")
        ).scalar()
    assert 1 == epochs


def test_migration_0004_makes_the_triggers_of_an_existing_install_fire_always(
    postgres_url: str,
) -> None:
    """An install made by an earlier release (schema at 0003, ordinary triggers) gets
    ENABLE ALWAYS triggers from the upgrade."""
    engine = create_engine(postgres_url)
    try:
        migrate(engine, "0003")
        with engine.begin() as conn:
            for table, trigger in (
                ("personal_access_tokens", "tokensync_pat_truncate"),
                ("personal_access_tokens", "tokensync_pat_outbox"),
                ("tokensync_epochs", "tokensync_epoch_outbox"),
                ("tokensync_outbox", "tokensync_outbox_audit"),
            ):
                conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
        migrate(engine)
        with engine.connect() as conn:
            modes = dict(
                conn.execute(
                    sa.text(
                        "SELECT tgname, tgenabled FROM pg_trigger"
                        " WHERE tgname LIKE 'tokensync%' AND NOT tgisinternal"
                    )
                ).all()
            )
        assert {
            "tokensync_pat_truncate": "A",
            "tokensync_pat_outbox": "A",
            "tokensync_epoch_outbox": "A",
            "tokensync_outbox_audit": "A",
        } == modes
    finally:
        engine.dispose()
