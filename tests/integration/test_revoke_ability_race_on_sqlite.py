"""revoke ability on SQLite takes the write lock before it reads its candidates, so the
rows it deletes are exactly those its epoch covers."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from tests.integration.test_revocation_races import assert_deleted_silently_iff_covered

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_token_committed_during_revoke_ability_on_sqlite_is_revoked_or_kept(
    sqlite_url: str,
) -> None:
    """A Laravel app that commits a token listing the ability right after revoke_ability
    read its candidate rows must either wait for the revocation (its token is issued after
    the epoch and kept) or be seen by it (covered and deleted); before the fix pysqlite
    began the transaction only at the first write, the Laravel insert committed in between,
    and its token was covered by the epoch (denied by the regions) but kept in the store.
    The interleaving is forced: the Laravel insert starts in a thread right after the
    candidate read and is given a second to commit before revoke_ability continues."""
    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        store.issue(USER, 1, "old", ["orders:read"])
        late = "d" * 64
        laravel: list[threading.Thread] = []

        def laravel_insert() -> None:
            db = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=30)
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
            db.execute(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (?, 2, 'late', ?, ?, ?, ?)",
                (USER, late, '["orders:read"]', now, now),
            )
            db.close()

        def after_candidates(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if laravel or not statement.startswith(
                "SELECT personal_access_tokens.id, personal_access_tokens.abilities"
            ):
                return
            thread = threading.Thread(target=laravel_insert, daemon=True)
            laravel.append(thread)
            thread.start()
            thread.join(timeout=1.0)

        sa.event.listen(engine, "after_cursor_execute", after_candidates)
        mutation = store.revoke_ability("orders:read")
        sa.event.remove(engine, "after_cursor_execute", after_candidates)
        assert laravel, "the candidate read was not seen"
        laravel[0].join(timeout=30)
        assert not laravel[0].is_alive()
        assert_deleted_silently_iff_covered(store, late, mutation)
    finally:
        engine.dispose()
