"""Attack finding (issue 11 items 8 and 11 review): revoke ability races a concurrent issue
on SQLite; the rows it deletes are not exactly those its epoch covers."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from producer.schema import create_engine, migrate
from producer.store import TokenStore, utcnow
from tests.integration.test_revocation_races import assert_deleted_silently_iff_covered

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_a_token_committed_during_revoke_ability_on_sqlite_is_revoked_or_kept(
    sqlite_url: str,
) -> None:
    """revoke_ability reads its candidate rows before its transaction takes SQLite's write
    lock (pysqlite begins at the first write: the audit marker). A Laravel app that commits
    a token listing the ability in between gets a token the epoch covers (the regions deny
    it) but the delete does not (the store and the Laravel app sharing it accept it):
    "revoked" everywhere but in the authority. The interleaving is forced by running the
    Laravel insert just before the first write of revoke_ability."""
    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        store.issue(USER, 1, "old", ["orders:read"])
        late = "d" * 64
        fired: list[bool] = []

        def laravel_commits_now(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if fired or not statement.startswith("INSERT INTO tokensync_audit_marker"):
                return
            fired.append(True)
            laravel = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=30)
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
            laravel.execute(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (?, 2, 'late', ?, ?, ?, ?)",
                (USER, late, '["orders:read"]', now, now),
            )
            laravel.close()

        sa.event.listen(engine, "before_cursor_execute", laravel_commits_now)
        mutation = store.revoke_ability("orders:read")
        sa.event.remove(engine, "before_cursor_execute", laravel_commits_now)
        assert fired
        assert_deleted_silently_iff_covered(store, late, mutation)
    finally:
        engine.dispose()
