"""TokenStore and the trigger-filled outbox, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.schema import create_engine
from producer.store import TokenStore
from producer.tokens import has_valid_checksum, hash_token
from shared.errors import NotFoundError, UsageError
from shared.events import GLOBAL_SCOPE, ability_scope, principal_scope

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def outbox(store: TokenStore) -> list[dict[str, object]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM tokensync_outbox ORDER BY seq")).all()
    return [dict(r._mapping) for r in rows]


def test_issue_returns_a_sanctum_token_and_stores_only_its_hash(store: TokenStore) -> None:
    issued = store.issue(USER, 42, "cli", ["read", "server/update"])
    head, plain = issued.plain_text_token.split("|", 1)
    token_id = int(head)
    assert issued.id == token_id
    assert re.fullmatch(r"[A-Za-z0-9]{40}[0-9a-f]{8}", plain)
    assert has_valid_checksum(plain)
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT token, abilities FROM personal_access_tokens")).one()
    assert (hash_token(plain), '["read","server\\/update"]') == (row.token, row.abilities)
    [event] = outbox(store)
    assert ("token", "issued", issued.seq, hash_token(plain)) == (
        event["kind"],
        event["op"],
        event["seq"],
        event["token_hash"],
    )
    assert plain not in repr(issued)
    assert all(plain not in str(v) for v in event.values())


def test_default_abilities_are_the_wildcard_as_php_writes_it(store: TokenStore) -> None:
    store.issue(USER, 1, "default")
    with store.engine.connect() as conn:
        assert (
            '["*"]'
            == conn.execute(sa.text("SELECT abilities FROM personal_access_tokens")).scalar()
        )


def test_rows_written_with_plain_sql_publish_like_ours(store: TokenStore) -> None:
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at)"
                " VALUES (:t, 7, 'laravel', :h, '[\"*\"]', :n, :n)"
            ),
            {"t": USER, "h": "a" * 64, "n": now},
        )
        conn.execute(
            sa.text("UPDATE personal_access_tokens SET last_used_at = :n, updated_at = :n"),
            {"n": now},
        )
        conn.execute(sa.text("UPDATE personal_access_tokens SET abilities = '[\"read\"]'"))
        conn.execute(sa.text("DELETE FROM personal_access_tokens"))
    events = outbox(store)
    assert ["issued", "updated", "revoked"] == [e["op"] for e in events]
    assert {"a" * 64} == {e["token_hash"] for e in events}
    assert ['["*"]', '["read"]', '["read"]'] == [e["abilities"] for e in events]
    assert sorted(e["seq"] for e in events) == [e["seq"] for e in events]
    assert events[0]["issued_at_ms"] == events[2]["issued_at_ms"]


def test_revoking_one_token_deletes_its_row_and_publishes_revoked(store: TokenStore) -> None:
    keep = store.issue(USER, 1, "keep")
    gone = store.issue(USER, 1, "gone")
    mutation = store.revoke_token(gone.id)
    assert [keep.id] == [t.id for t in store.list_tokens(USER, 1)]
    last = outbox(store)[-1]
    assert ("revoked", gone.token_hash, mutation.seq) == (
        last["op"],
        last["token_hash"],
        last["seq"],
    )
    with pytest.raises(NotFoundError):
        store.revoke_token(gone.id)


def test_revoking_a_principal_is_one_epoch_event_and_deletes_its_rows(store: TokenStore) -> None:
    for i in range(5):
        store.issue(USER, 9, f"t{i}")
    other = store.issue(USER, 10, "other")
    before = len(outbox(store))
    mutation = store.revoke_principal(USER, 9)
    new = outbox(store)[before:]
    assert [("epoch", principal_scope(USER, 9))] == [(e["kind"], e["scope"]) for e in new]
    assert (5, new[0]["seq"]) == (mutation.removed, mutation.seq)
    assert [] == store.list_tokens(USER, 9)
    assert [other.id] == [t.id for t in store.list_tokens(USER, 10)]


def test_epochs_only_move_forward(store: TokenStore) -> None:
    later = store.revoke_all(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))  # the future is refused
    earlier = store.revoke_all(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert later.before_ms == earlier.before_ms
    assert later.seq == earlier.seq
    assert 1 == sum(1 for e in outbox(store) if e["scope"] == GLOBAL_SCOPE)


def test_revoking_an_ability_hits_only_tokens_that_list_it_literally(store: TokenStore) -> None:
    admin = store.issue(USER, 1, "admin", ["admin", "read"])
    wildcard = store.issue(USER, 1, "all", ["*"])
    lookalike = store.issue(USER, 1, "lookalike", ["admin:read"])
    mutation = store.revoke_ability("admin")
    assert ability_scope("admin") == mutation.scope
    assert 1 == mutation.removed
    assert {wildcard.id, lookalike.id} == {t.id for t in store.list_tokens(USER, 1)}
    assert admin.id not in {t.id for t in store.list_tokens(USER, 1)}


def test_revoke_all_before_now_removes_every_row_with_one_event(store: TokenStore) -> None:
    for i in range(3):
        store.issue(USER, i, "t")
    before = len(outbox(store))
    mutation = store.revoke_all()
    assert (3, ["epoch"]) == (mutation.removed, [e["op"] for e in outbox(store)[before:]])
    fresh = store.issue(USER, 1, "after")
    assert [fresh.id] == [t.id for t in store.list_tokens(USER, 1)]


def test_rotation_revokes_now_or_after_a_grace_period(store: TokenStore) -> None:
    old = store.issue(USER, 3, "rotating", ["read"])
    new = store.rotate(old.id)
    assert [new.id] == [t.id for t in store.list_tokens(USER, 3)]
    assert ("rotating", ("read",)) == (new.name, new.abilities)
    graced = store.rotate(new.id, grace_seconds=60)
    tokens = {t.id: t for t in store.list_tokens(USER, 3)}
    assert {new.id, graced.id} == set(tokens)
    assert tokens[new.id].expires_at is not None
    assert "updated" == outbox(store)[-1]["op"]


def test_prune_expired_follows_sanctums_hours_rule(store: TokenStore) -> None:
    now = utcnow()
    long_gone = store.issue(USER, 1, "old", expires_at=now - dt.timedelta(hours=30))
    recent = store.issue(USER, 1, "recent", expires_at=now - dt.timedelta(hours=1))
    live = store.issue(USER, 1, "live", expires_at=now + dt.timedelta(hours=1))
    mutation = store.prune_expired(hours=24)
    assert 1 == mutation.removed
    assert {recent.id, live.id} == {t.id for t in store.list_tokens(USER, 1)}
    assert long_gone.token_hash == outbox(store)[-1]["token_hash"]


def test_find_matches_sanctums_lookup_with_and_without_the_id(store: TokenStore) -> None:
    issued = store.issue(USER, 5, "find")
    _, plain = issued.plain_text_token.split("|", 1)
    assert issued.id == (store.find(issued.plain_text_token) or pytest.fail()).id
    assert issued.id == (store.find(plain) or pytest.fail()).id
    assert store.find(f"{issued.id}|{'x' * 48}") is None
    assert store.find("not-a-number|abc") is None


def test_bad_input_is_refused_and_nothing_is_written(store: TokenStore) -> None:
    for call in (
        lambda: store.issue(USER, "abc", "n"),
        lambda: store.issue(USER, 1, ""),
        lambda: store.issue(USER, 1, "n", [""]),
        lambda: store.issue(USER, 1, "n", "read"),  # type: ignore[arg-type]
        lambda: store.revoke_ability(" "),
        lambda: store.prune_expired(-1),
    ):
        with pytest.raises(UsageError):
            call()
    assert [] == outbox(store)


def test_outbox_seqs_increase_across_every_kind_of_change(store: TokenStore) -> None:
    a = store.issue(USER, 1, "a")
    b = store.revoke_principal(USER, 2)
    c = store.revoke_token(a.id)
    assert a.seq < b.seq < c.seq


def test_processes_starting_at_once_on_a_fresh_database_migrate_it_once(
    database_url: str,
) -> None:
    # The relay, the API and a CLI command of a new stack all migrate at start-up.
    script = (
        "import sys; from producer.schema import create_engine, migrate; "
        "migrate(create_engine(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0].decode(errors="replace") for proc in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(outputs)
    engine = create_engine(database_url)  # the store's own: READ COMMITTED on MySQL
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            store = TokenStore(engine)
            issued = store.issue("App\\Models\\User", 1, "after a racy start")
            outbox = conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar()
    finally:
        engine.dispose()
    assert len(versions) == 1
    assert issued.id > 0 and outbox == 1  # one trigger fired once


def test_find_reads_a_presented_token_as_the_validators_do(store: TokenStore) -> None:
    """One token parser: the store's lookup refuses what every validator refuses
    (shared.tokenformat.parse_presented) instead of asking the database with it."""
    issued = store.issue(USER, 6, "find-strict")
    _, plain = issued.plain_text_token.split("|", 1)
    assert store.find(f"99999999999999999999|{plain}") is None  # no BIGINT holds that id
    assert store.find(f"{issued.id}|{plain}\x00") is None
    assert store.find(f"{issued.id}|{plain[:-1]}\u00e9") is None
    assert store.find(f"{issued.id}|{plain}{'x' * 300}") is None
