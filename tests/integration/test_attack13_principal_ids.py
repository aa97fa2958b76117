"""Attack finding (issue 13 item 3 review): a UUID principal id as an incident hands it over."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.errors import UsageError

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
TABLE = """CREATE TABLE personal_access_tokens (
    id {pk}, tokenable_type VARCHAR(255) NOT NULL, tokenable_id CHAR(36) NOT NULL,
    name TEXT NOT NULL, token VARCHAR(64) NOT NULL UNIQUE, abilities TEXT,
    last_used_at TIMESTAMP, expires_at TIMESTAMP, created_at TIMESTAMP, updated_at TIMESTAMP)"""


def test_revoke_principal_with_an_uppercase_uuid_revokes_the_users_tokens_or_says_it_cannot(
    database_url: str,
) -> None:
    """Laravel's uuidMorphs is CHAR(36) on SQLite/MySQL and Str::uuid() writes lowercase;
    UUIDs are case-insensitive (RFC 9562) and many tools (SQL Server, .NET, a SIEM) print
    them uppercase. ``revoke principal --id 9B1DEB4D-...`` matches no row, publishes an
    epoch for a scope no token has, and reports success: the compromised user stays
    logged in everywhere. (On PostgreSQL's uuid column the id is normalised, so it works.)"""
    engine = create_engine(database_url)
    pk = "BIGSERIAL PRIMARY KEY" if engine.dialect.name == "postgresql" else "INTEGER PRIMARY KEY"
    with engine.begin() as conn:
        conn.execute(sa.text(TABLE.format(pk=pk)))
    migrate(engine)
    store = TokenStore(engine)
    lower = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    with engine.begin() as conn:  # the Laravel app logs the user in
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at)"
                " VALUES (:t, :i, 'phone', :h, '[\"*\"]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"t": USER, "i": lower, "h": "ef" * 32},
        )
    try:
        mutation = store.revoke_principal(USER, lower.upper())
    except UsageError:
        return  # a clear refusal is fine too
    finally:
        engine.dispose()
    assert 1 == mutation.removed, f"success reported, nothing revoked (scope {mutation.scope})"
