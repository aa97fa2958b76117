"""UUID principal ids on string (CHAR(36)) columns match in any case, in the store and in
the regions; a principal revocation that matches no stored row says so."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from producer.schema import create_engine, migrate
from producer.store import TokenStore
from producer.token_check import read_stored_token
from shared.cli import root
from shared.errors import UsageError
from shared.events import principal_scope
from shared.rules import epoch_scopes
from shared.validator import Outcome, Validator
from tests.integration.test_validator import A
from tests.region_helpers import RegionFixture, now_ms

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
TABLE = """CREATE TABLE personal_access_tokens (
    id {pk}, tokenable_type VARCHAR(255) NOT NULL, tokenable_id CHAR(36) NOT NULL,
    name TEXT NOT NULL, token VARCHAR(64) NOT NULL UNIQUE, abilities TEXT,
    last_used_at TIMESTAMP NULL, expires_at TIMESTAMP NULL, created_at TIMESTAMP NULL,
    updated_at TIMESTAMP NULL)"""
_PK = {
    "postgresql": "BIGSERIAL PRIMARY KEY",
    "mysql": "BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY",
    "mariadb": "BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY",
}


def test_revoke_principal_with_an_uppercase_uuid_revokes_the_users_tokens_or_says_it_cannot(
    database_url: str,
) -> None:
    """Laravel's uuidMorphs is CHAR(36) on SQLite/MySQL and Str::uuid() writes lowercase;
    UUIDs are case-insensitive (RFC 9562) and many tools (SQL Server, .NET, a SIEM) print
    them uppercase. ``revoke principal --id 9B1DEB4D-...`` matches no row, publishes an
    epoch for a scope no token has, and reports success: the compromised user stays
    logged in everywhere. (On PostgreSQL's uuid column the id is normalised, so it works.)"""
    engine = create_engine(database_url)
    pk = _PK.get(engine.dialect.name, "INTEGER PRIMARY KEY")
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


def test_an_epoch_for_a_uuid_principal_revokes_its_tokens_in_a_region_in_any_case(
    redis_url: str,
) -> None:
    """A token stored with an upper-case UUID id (a non-Laravel writer) is covered by the
    epoch ``revoke principal`` writes for the canonical (lower-case) scope, in the region
    (validate.lua) and in the Python rules (store fallback, admin API) alike."""
    region = RegionFixture(redis_url)
    region.beat()
    validator = Validator.from_url(redis_url)
    upper = "9B1DEB4D-3B7D-4BAD-9BDD-2B0D7B3DCB6D"
    t = now_ms()
    region.token(A, owner=upper, issued_at=t - 10_000)
    assert Outcome.VALID == validator.validate(A).outcome
    region.epoch(principal_scope(USER, upper), t - 5_000)
    assert principal_scope(USER, upper) == f"principal:{USER}:{upper.lower()}"
    assert principal_scope(USER, upper) in epoch_scopes(USER, upper, ())
    assert Outcome.INVALID == validator.validate(A).outcome
    validator.close()


def test_a_principal_revocation_that_matches_no_stored_token_warns(sqlite_url: str) -> None:
    """The epoch is published (tokens may live in regions only), but the responder is told
    that no stored token matched: a misspelt id is not reported as a plain success."""
    env = {"TOKENSYNC_DATABASE_URL": sqlite_url}
    runner = CliRunner()
    result = runner.invoke(
        root,
        ["revoke", "principal", "--type", USER, "--id", "424242", "--reason", "incident 7"],
        env=env,
        catch_exceptions=False,
    )
    assert 0 == result.exit_code, result.output
    assert "warning: no stored token" in result.output
    result = runner.invoke(
        root,
        ["revoke", "principal", "--type", USER, "--id", "424242", "--reason", "again", "--json"],
        env=env,
        catch_exceptions=False,
    )
    assert 0 == result.exit_code, result.output
    assert '"warning": "warning: no stored token' in result.output


def test_the_store_fallback_reads_a_token_of_a_uuid_principal(database_url: str) -> None:
    """The store fallback (and the admin API) read a token whose principal id is a UUID on
    a string column (it once failed on int() of the id); revoked, the token is gone."""
    engine = create_engine(database_url)
    pk = _PK.get(engine.dialect.name, "INTEGER PRIMARY KEY")
    with engine.begin() as conn:
        conn.execute(sa.text(TABLE.format(pk=pk)))
    migrate(engine)
    store = TokenStore(engine)
    try:
        issued = store.issue(USER, "9B1DEB4D-3B7D-4BAD-9BDD-2B0D7B3DCB6D", "phone")
        stored = read_stored_token(store, issued.plain_text_token)
        assert stored is not None
        assert "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d" == stored.record.principal.tokenable_id
        store.revoke_principal(USER, "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
        assert read_stored_token(store, issued.plain_text_token) is None
    finally:
        store.close()
