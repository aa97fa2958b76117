"""Revocations that cannot be fat-fingered: no future epochs, confirmation, dry runs,
the wildcard report, string principal ids; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from producer.dryrun import count_ability, count_all, count_principal
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.errors import UsageError
from tests.cli_helpers import run_at_terminal, run_cli

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"


def outbox_len(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM tokensync_outbox")).scalar_one())


def epochs(store: TokenStore) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT scope FROM tokensync_epochs"))]


def test_revoke_all_refuses_a_time_in_the_future_and_writes_nothing(store: TokenStore) -> None:
    store.issue(USER, 1, "t")
    before = outbox_len(store)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with pytest.raises(UsageError, match="in the future"):
        store.revoke_all(future)
    with pytest.raises(UsageError, match="in the future"):
        store.revoke_all(dt.datetime(2999, 1, 1, tzinfo=dt.UTC))
    assert (before, []) == (outbox_len(store), epochs(store))
    assert 1 == len(store.list_tokens(USER, 1))


def test_the_cli_refuses_a_future_before_with_exit_2_in_text_and_json(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["revoke", "all", "--before", "2999-01-01", "--yes", "--reason", "oops"]
    text = run_cli(monkeypatch, capsys, database_url, *args)
    assert 2 == text.code
    assert 1 == len(text.err.strip().splitlines()) and "future" in text.err
    assert "Traceback" not in text.err + text.out
    as_json = run_cli(monkeypatch, capsys, database_url, *args, "--json")
    assert 2 == as_json.code
    assert {"code": "usage", "exit_code": 2} == {
        k: v for k, v in json.loads(as_json.out).items() if k != "error"
    }
    assert [] == epochs(store)


def test_revoke_all_needs_yes_off_a_terminal_and_with_json(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.issue(USER, 1, "t")
    base = ["revoke", "all", "--before", "now", "--reason", "drill"]
    piped = run_cli(monkeypatch, capsys, database_url, *base)
    as_json = run_cli(monkeypatch, capsys, database_url, *base, "--json")
    no_reason = run_cli(
        monkeypatch, capsys, database_url, "revoke", "all", "--before", "now", "--yes"
    )
    assert (2, 2, 2) == (piped.code, as_json.code, no_reason.code)
    assert "--yes" in piped.err and "--yes" in json.loads(as_json.out)["error"]
    assert "--reason" in no_reason.err
    assert ([], 1) == (epochs(store), len(store.list_tokens(USER, 1)))
    done = run_cli(monkeypatch, capsys, database_url, *base, "--yes", "--json")
    assert 0 == done.code, done.err
    assert (1, ["global"]) == (json.loads(done.out)["removed"], epochs(store))


def _database(url: str) -> dict[str, str]:
    return {"TOKENSYNC_DATABASE_URL": url}


def test_revoke_all_asks_on_a_terminal_and_does_nothing_unless_confirmed(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    store.issue(USER, 1, "t")
    store.issue(ADMIN, 0, "root", ["*"])
    args = ["revoke", "all", "--before", "now", "--reason", "drill"]
    declined = run_at_terminal(tmp_path, args, answer="n", env_extra=_database(sqlite_url))
    assert 1 == declined.code, declined.out
    assert "2 stored token(s)" in declined.out and f"{ADMIN}: 1" in declined.out
    assert "nothing was revoked" in declined.out and "Traceback" not in declined.out
    assert [] == epochs(store)
    confirmed = run_at_terminal(tmp_path, args, answer="y", env_extra=_database(sqlite_url))
    assert 0 == confirmed.code, confirmed.out
    assert "2 row(s) removed" in confirmed.out
    assert ["global"] == epochs(store)
    engine.dispose()


def test_dry_runs_count_the_scope_per_principal_type_and_publish_nothing(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.issue(USER, 1, "a", ["orders:read"])
    store.issue(USER, 1, "b", ["*"])
    store.issue(USER, 2, "c", ["orders:read", "orders:write"])
    store.issue("App\\Models\\Team", 1, "d", ["orders:read"])
    store.issue(ADMIN, 0, "root", ["*"])
    before = outbox_len(store)
    assert {USER: 2} == count_principal(store, USER, 1).by_type
    ability = count_ability(store, "orders:read")
    assert ({USER: 2, "App\\Models\\Team": 1}, {USER: 1, ADMIN: 1}) == (
        ability.by_type,
        ability.wildcard_by_type,
    )
    assert {USER: 3, "App\\Models\\Team": 1, ADMIN: 1} == count_all(store, None).by_type
    run = run_cli(
        monkeypatch, capsys, database_url, "revoke", "ability", "orders:read", "--dry-run", "--json"
    )
    assert 0 == run.code, run.err
    body = json.loads(run.out)
    assert (True, 3, 2) == (body["dry_run"], body["tokens"], body["wildcard_tokens"])
    text = run_cli(
        monkeypatch,
        capsys,
        database_url,
        "revoke",
        "principal",
        "--type",
        USER,
        "--id",
        "1",
        "--dry-run",
    )
    assert 0 == text.code and f"{USER}: 2" in text.out
    assert (before, []) == (outbox_len(store), epochs(store))
    assert 5 == sum(
        len(store.list_tokens(t, i))
        for t, i in [(USER, 1), (USER, 2), ("App\\Models\\Team", 1), (ADMIN, 0)]
    )


def test_revoking_an_ability_reports_wildcard_tokens_and_can_include_them(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    literal = store.issue(USER, 1, "a", ["orders:read"])
    wildcard = store.issue(USER, 1, "b", ["*"])
    other = store.issue(USER, 2, "c", ["profile"])
    first = run_cli(
        monkeypatch, capsys, database_url, "revoke", "ability", "orders:read", "--reason", "leak"
    )
    assert 0 == first.code, first.err
    assert "1 live token(s) hold '*'" in first.out and "--include-wildcard" in first.out
    assert {wildcard.id, other.id} == {
        t.id for t in store.list_tokens(USER, 1) + store.list_tokens(USER, 2)
    }
    before = outbox_len(store)
    second = run_cli(
        monkeypatch,
        capsys,
        database_url,
        "revoke",
        "ability",
        "orders:read",
        "--include-wildcard",
        "--yes",
        "--reason",
        "leak",
        "--json",
    )
    assert 0 == second.code, second.err
    assert 1 == json.loads(second.out)["per_token"]
    assert [other.id] == [t.id for t in store.list_tokens(USER, 2)] and [] == store.list_tokens(
        USER, 1
    )
    with store.engine.connect() as conn:
        ops = conn.execute(
            sa.text("SELECT op, token_id FROM tokensync_outbox WHERE seq > :s ORDER BY seq"),
            {"s": before},
        ).all()
    assert ("revoked", wildcard.id) in [(o, t) for o, t in ops]
    assert literal.id not in [t for _, t in ops]


def test_revoke_ability_include_wildcard_needs_yes_off_a_terminal_and_asks_on_one(
    store: TokenStore,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Like revoke all: revoking every live '*' token (admin tokens included) cannot be
    undone, so it takes --yes off a terminal, and a typed "y" on one."""
    wildcard = store.issue(USER, 1, "w", ["*"])
    admin = store.issue(ADMIN, 0, "root", ["*"])
    args = ["revoke", "ability", "orders:read", "--include-wildcard", "--reason", "leak"]
    for extra in ([], ["--json"]):
        refused = run_cli(monkeypatch, capsys, database_url, *args, *extra)
        assert 2 == refused.code, (refused.out, refused.err)
        assert "--yes" in refused.out + refused.err
    assert [] == epochs(store), "nothing revoked without --yes"
    if not database_url.startswith("sqlite"):
        return  # the terminal half needs a child process; one backend is enough
    declined = run_at_terminal(tmp_path, args, answer="n", env_extra=_database(database_url))
    assert 1 == declined.code, declined.out
    assert "2 token(s)" in declined.out and f"{ADMIN}: 1" in declined.out
    assert {wildcard.id, admin.id} == {t.id for t in store.list_tokens(USER, 1)} | {
        t.id for t in store.list_tokens(ADMIN, 0)
    }
    confirmed = run_at_terminal(tmp_path, args, answer="y", env_extra=_database(database_url))
    assert 0 == confirmed.code, confirmed.out
    assert [] == store.list_tokens(USER, 1) + store.list_tokens(ADMIN, 0)


UUID_TABLE = """CREATE TABLE personal_access_tokens (
    id {pk}, tokenable_type VARCHAR(255) NOT NULL, tokenable_id {kind} NOT NULL,
    name TEXT NOT NULL, token VARCHAR(64) NOT NULL UNIQUE, abilities TEXT,
    last_used_at TIMESTAMP, expires_at TIMESTAMP, created_at TIMESTAMP, updated_at TIMESTAMP)"""


@pytest.mark.parametrize("kind", ["CHAR(36)", "uuid"])
def test_string_principal_ids_work_on_laravel_uuid_and_ulid_morph_tables(
    database_url: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = create_engine(database_url)
    if kind == "uuid" and engine.dialect.name == "sqlite":
        kind = "CHAR(26)"  # ulidMorphs; SQLite has no uuid type
    pk = {
        "postgresql": "BIGSERIAL PRIMARY KEY",
        "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }.get(engine.dialect.name, "BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY")
    table = UUID_TABLE.format(pk=pk, kind=kind)
    if engine.dialect.name in {"mysql", "mariadb"}:
        table = table.replace("TIMESTAMP", "TIMESTAMP NULL")  # as Laravel's ->nullable()
    with engine.begin() as conn:
        conn.execute(sa.text(table))
    migrate(engine)
    store = TokenStore(engine)
    uuid_id = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    ulid_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    ids = [uuid_id] if kind == "uuid" else [uuid_id, ulid_id]
    for owner in ids:
        issued = store.issue(USER, owner, "t")
        assert owner == issued.tokenable_id
        assert [issued.id] == [t.id for t in store.list_tokens(USER, owner)]
        assert {USER: 1} == count_principal(store, USER, owner).by_type
        run = run_cli(
            monkeypatch,
            capsys,
            database_url,
            "revoke",
            "principal",
            "--type",
            USER,
            "--id",
            owner,
            "--reason",
            "compromised",
            "--json",
        )
        assert 0 == run.code, run.err
        assert (1, f"principal:{USER}:{owner}") == (
            json.loads(run.out)["removed"],
            json.loads(run.out)["scope"],
        )
    if kind == "uuid":
        with pytest.raises(UsageError, match="UUID"):
            store.issue(USER, ulid_id, "t")
    engine.dispose()


def test_a_string_id_on_an_integer_column_is_a_clear_error(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError, match="whole number"):
        store.issue(USER, "01ARZ3NDEKTSV4RRFFQ69G5FAV", "t")
    run = run_cli(
        monkeypatch,
        capsys,
        database_url,
        "revoke",
        "principal",
        "--type",
        USER,
        "--id",
        "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d",
        "--reason",
        "x",
    )
    assert 2 == run.code and "whole number" in run.err


def test_the_api_refuses_a_future_before_with_422_and_counts_dry_runs(store: TokenStore) -> None:
    import httpx

    from producer.api import create_app
    from shared.settings import Settings
    from tests.http_helpers import serving

    store.issue(USER, 1, "t")
    mass = store.issue(ADMIN, 0, "responder", ["revocations:mass"]).plain_text_token
    headers = {"Authorization": f"Bearer {mass}"}
    with serving(create_app(Settings(), store)) as url, httpx.Client(base_url=url) as http:
        future = http.post(
            "/v1/revocations/all", json={"before": "2999-01-01", "reason": "x"}, headers=headers
        )
        assert 422 == future.status_code and "future" in future.json()["error"]
        dry = http.post(
            "/v1/revocations/all", json={"before": "now", "dry_run": True}, headers=headers
        )
        assert {USER: 1, ADMIN: 1} == dry.json()["by_type"]
    assert [] == epochs(store)
