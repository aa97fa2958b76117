"""Revocation scopes in the store match what the regions revoke, however rows are spelled."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.store import TokenStore

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def insert_raw(store: TokenStore, token: str, abilities: str | None, **columns: object) -> None:
    values: dict[str, object] = {
        "tokenable_type": USER,
        "tokenable_id": 7,
        "name": "laravel",
        "token": token,
        "abilities": abilities,
        "created_at": utcnow(),
        "updated_at": utcnow(),
        **columns,
    }
    names = ", ".join(values)
    params = ", ".join(f":{n}" for n in values)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO personal_access_tokens ({names}) VALUES ({params})"),  # noqa: S608
            values,
        )


def tokens(store: TokenStore) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT token FROM personal_access_tokens")).scalars())


def test_revoke_ability_removes_rows_whatever_the_json_spelling(store: TokenStore) -> None:
    insert_raw(store, "1" * 64, '["files/read"]')  # not PHP's "files\/read"
    insert_raw(store, "2" * 64, '["files\\/read"]')  # PHP's spelling
    insert_raw(store, "3" * 64, '[ "other", "files\\u002fread" ]')  # spaces, \u escape
    insert_raw(store, "4" * 64, '["files/reader", "read"]')  # a different ability
    insert_raw(store, "5" * 64, '["café:read"]')  # JSON_UNESCAPED_UNICODE
    insert_raw(store, "6" * 64, '["caf\\u00e9:read"]')  # PHP's default
    insert_raw(store, "7" * 64, '["files_read"]')  # LIKE's _ must not match '/'

    files = store.revoke_ability("files/read")
    cafe = store.revoke_ability("café:read")

    assert (3, 2) == (files.removed, cafe.removed)
    assert {"4" * 64, "7" * 64} == tokens(store)


def test_rows_without_created_at_or_issue_time_fall_to_every_revocation_scope(
    store: TokenStore,
) -> None:
    with store.engine.begin() as conn:  # rows from before tokensync: no trigger-written meta
        conn.execute(sa.text("DELETE FROM tokensync_token_meta"))
    insert_raw(store, "a" * 64, '["deploy"]', created_at=None)
    insert_raw(store, "b" * 64, '["read"]', created_at=None, tokenable_id=8)
    insert_raw(store, "c" * 64, '["read"]', created_at=None, tokenable_id=9)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tokensync_token_meta"))

    assert 1 == store.revoke_ability("deploy").removed
    assert 1 == store.revoke_principal(USER, 8).removed
    assert 1 == store.revoke_all().removed
    assert set() == tokens(store)
