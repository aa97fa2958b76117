"""Attack finding (invariant 1 review): PostgreSQL triggers that a session can switch off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer.schema import create_engine, migrate
from producer.store import TokenStore

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[TokenStore]:
    engine = create_engine(postgres_url)
    migrate(engine)
    store = TokenStore(engine)
    yield store
    store.close()


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
