"""The audit trail: every mutation path (Python API, CLI, HTTP API, plain SQL) leaves a record
in the same transaction, with actor, action, scope, seq, reason and request id."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import socket

import httpx
import pytest
import sqlalchemy as sa

from producer.api import create_app
from producer.audit import AuditContext, read
from producer.clock import utcnow
from producer.store import TokenStore
from shared.errors import NotFoundError
from tests.cli_helpers import run_cli
from tests.harness import Pipeline
from tests.http_helpers import serving

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"


def audit_rows(store: TokenStore) -> list[dict[str, object]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM tokensync_audit ORDER BY id")).all()
    return [dict(r._mapping) for r in rows]


def outbox_seqs(store: TokenStore) -> set[int]:
    with store.engine.connect() as conn:
        return {int(s) for (s,) in conn.execute(sa.text("SELECT seq FROM tokensync_outbox"))}


def test_the_python_api_records_the_callers_actor_and_reason_with_the_seq(
    store: TokenStore,
) -> None:
    who = AuditContext.python("billing-service", reason="login")
    issued = store.issue(USER, 1, "web", ["orders:read"], audit=who)
    rotated = store.rotate(issued.id, audit=who)
    revoked = store.revoke_token(rotated.id)  # no context: actor 'python'
    epoch = store.revoke_principal(USER, 2, audit=AuditContext.python("ops", reason="offboarded"))
    rows = audit_rows(store)
    assert [
        ("python", "billing-service", "token.issue", f"token:{issued.id}", issued.seq, "login"),
        ("python", "billing-service", "token.rotate", f"token:{issued.id}", rotated.seq, "login"),
        ("python", "python", "token.revoke", f"token:{rotated.id}", revoked.seq, None),
        ("python", "ops", "revoke.principal", f"principal:{USER}:2", epoch.seq, "offboarded"),
    ] == [
        (r["actor_kind"], r["actor"], r["action"], r["scope"], r["seq"], r["reason"]) for r in rows
    ]
    assert {r["seq"] for r in rows} <= outbox_seqs(store)
    assert (USER, "1") == (rows[0]["tokenable_type"], rows[0]["tokenable_id"])


def test_a_failed_mutation_leaves_no_audit_record(store: TokenStore) -> None:
    with pytest.raises(NotFoundError):
        store.revoke_token(999_999)
    assert [] == audit_rows(store)


def test_rows_a_laravel_app_writes_with_plain_sql_are_audited_as_sql(store: TokenStore) -> None:
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at)"
                " VALUES (:t, 7, 'laravel', :h, '[\"*\"]', :n, :n)"
            ),
            {"t": USER, "h": "b" * 64, "n": now},
        )
    with store.engine.begin() as conn:  # Sanctum's per-request touch is no audit event
        conn.execute(sa.text("UPDATE personal_access_tokens SET last_used_at = :n"), {"n": now})
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE personal_access_tokens SET abilities = '[\"read\"]'"))
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE tokenable_id = 7"))
    ours = store.issue(USER, 8, "ours")
    rows = audit_rows(store)
    sql = [r for r in rows if r["actor"] == "sql"]
    assert ["token.issue", "token.update", "token.revoke"] == [r["action"] for r in sql]
    assert {"sql"} == {r["actor_kind"] for r in sql}
    with store.engine.connect() as conn:
        ops = dict(conn.execute(sa.text("SELECT seq, op FROM tokensync_outbox")).all())
    assert ["issued", "updated", "revoked"] == [ops[r["seq"]] for r in sql]
    assert {(USER, "7")} == {(r["tokenable_type"], r["tokenable_id"]) for r in sql}
    assert [("python", ours.seq)] == [(r["actor_kind"], r["seq"]) for r in rows if r not in sql]


def test_every_cli_mutation_is_audited_with_user_host_and_reason_and_prune_keeps_the_trail(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def cli(*args: str) -> str:
        run = run_cli(monkeypatch, capsys, database_url, *args)
        assert 0 == run.code, run.err
        return run.out

    token = cli("token", "issue", "--type", USER, "--id", "1", "--name", "n", "--reason", "r1")
    token_id = token.split("|")[0]
    rotated = cli("token", "rotate", token_id, "--reason", "r2").split("|")[0]
    cli("token", "revoke", rotated, "--reason", "r3")
    old = store.issue(USER, 2, "old", expires_at=utcnow() - dt.timedelta(days=3))
    cli("token", "prune", "--reason", "r4")
    cli("revoke", "principal", "--type", USER, "--id", "3", "--reason", "r5")
    cli("revoke", "ability", "orders:read", "--reason", "r6")
    cli("revoke", "all", "--before", "now", "--yes", "--reason", "r7")
    rows = [r for r in audit_rows(store) if r["actor_kind"] == "cli"]
    me = f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"
    assert [
        ("token.issue", "r1"),
        ("token.rotate", "r2"),
        ("token.revoke", "r3"),
        ("token.prune", "r4"),
        ("revoke.principal", "r5"),
        ("revoke.ability", "r6"),
        ("revoke.all", "r7"),
    ] == [(r["action"], r["reason"]) for r in rows]
    assert {me} == {r["actor"] for r in rows}
    assert 1 == next(r["removed"] for r in rows if r["action"] == "token.prune")
    with pytest.raises(NotFoundError):
        store.get(old.id)
    count = len(audit_rows(store))
    store.prune_expired(0)
    assert count + 1 == len(audit_rows(store))  # pruning tokens never prunes the trail
    assert token.strip() not in json.dumps(audit_rows(store), default=str)

    listed = run_cli(
        monkeypatch, capsys, database_url, "audit", "--since", "1h", "--actor", me, "--json"
    )
    assert 0 == listed.code, listed.err
    assert [r["action"] for r in rows] == [e["action"] for e in json.loads(listed.out)]
    text = run_cli(monkeypatch, capsys, database_url, "audit", "--actor", "cli")
    assert "revoke.all" in text.out and "reason: r7" in text.out
    bad = run_cli(monkeypatch, capsys, database_url, "audit", "--since", "soon", "--json")
    assert (2, "usage") == (bad.code, json.loads(bad.out)["code"])


def test_api_mutations_record_the_callers_token_and_the_request_id_and_audit_needs_audit_read(
    client: httpx.Client, store: TokenStore
) -> None:
    root = store.issue(ADMIN, 0, "root", ["*"])
    headers = {"Authorization": f"Bearer {root.plain_text_token}", "X-Request-ID": "req-42"}
    created = client.post(
        "/v1/tokens",
        json={"tokenable_type": USER, "tokenable_id": 5, "name": "n", "reason": "signup"},
        headers=headers,
    )
    assert 201 == created.status_code and "req-42" == created.headers["x-request-id"]
    no_reason = client.post("/v1/revocations/all", json={"before": "now"}, headers=headers)
    assert 422 == no_reason.status_code and "reason" in no_reason.json()["error"]
    epoch = client.post(
        "/v1/revocations/ability",
        json={"ability": "orders:read", "reason": "leak"},
        headers=headers,
    )
    assert 200 == epoch.status_code
    revoked = client.delete(f"/v1/tokens/{created.json()['id']}?reason=cleanup", headers=headers)
    assert 200 == revoked.status_code
    rows = [r for r in audit_rows(store) if r["actor_kind"] == "api"]
    actor = f"token:{root.id} ({ADMIN}:0)"
    assert [("token.issue", "signup"), ("revoke.ability", "leak"), ("token.revoke", "cleanup")] == [
        (r["action"], r["reason"]) for r in rows
    ]
    assert {(actor, "req-42")} == {(r["actor"], r["request_id"]) for r in rows}
    reader = store.issue(ADMIN, 1, "auditor", ["audit:read"]).plain_text_token
    listed = client.get(
        "/v1/audit", params={"actor": "api"}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert ["token.issue", "revoke.ability", "token.revoke"] == [e["action"] for e in listed.json()]
    no_audit = client.get(
        "/v1/audit", headers={"Authorization": f"Bearer {root.plain_text_token[:-1]}x"}
    )
    assert 401 == no_audit.status_code
    issuer = store.issue(ADMIN, 2, "issuer", ["tokens:issue"]).plain_text_token
    assert 403 == client.get("/v1/audit", headers={"Authorization": f"Bearer {issuer}"}).status_code


def test_the_receipt_of_a_revocation_is_attached_to_its_audit_record_once_complete(
    one_region: Pipeline,
) -> None:
    pipeline = one_region
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    store = pipeline.store
    root = store.issue(ADMIN, 0, "root", ["*"])
    victim = store.issue(USER, 1, "leaked")
    headers = {"Authorization": f"Bearer {root.plain_text_token}"}
    with serving(create_app(pipeline.settings, store)) as url, httpx.Client(base_url=url) as http:
        done = http.post(
            "/v1/tokens/revoke",
            params={"wait": "true", "timeout": "30"},
            json={"token": victim.plain_text_token, "reason": "pasted in a ticket"},
            headers=headers,
        )
        assert 200 == done.status_code, done.text
        assert done.json()["receipt"]["regions"][0]["enforced"]
        [entry] = read(store.engine, action="token.revoke")
        assert entry.receipt is not None and entry.receipt["seq"] == entry.seq
        assert "enforced in 1/1 regions" in entry.receipt["summary"]
        assert "pasted in a ticket" == entry.reason


def test_a_token_pasted_into_a_reason_is_redacted_from_the_audit_record(
    store: TokenStore,
) -> None:
    leaked = store.issue(USER, 1, "leaked")
    bare = leaked.plain_text_token.split("|", 1)[1]
    # 40 hex digits may be a commit id, or an app's own bin2hex(random_bytes(20)) token in
    # the shared table: every run of the shape of a secret is redacted.
    sha = "a" * 40
    reason = f"INC-9 found {leaked.plain_text_token} and {bare} near commit {sha} (INC-8)"
    store.revoke_token(leaked.id, audit=AuditContext.python("responder", reason=reason))
    [entry] = read(store.engine, action="token.revoke")
    expected = "INC-9 found [token redacted] and [token redacted] near commit [token redacted]"
    assert f"{expected} (INC-8)" == entry.reason
    assert bare not in json.dumps(audit_rows(store), default=str)


def test_two_readers_attaching_the_same_receipt_at_once_never_fail(store: TokenStore) -> None:
    """Two GET /v1/receipts of one complete seq both attach its receipt: the one that
    checks while the other's insert is not yet committed must not die on the key (500);
    the first receipt stays."""
    import threading
    import time

    from producer.audit import attach_receipt

    victim = store.issue(USER, 1, "victim")
    audit_id = store.revoke_token(victim.id, audit=AuditContext.python("r")).audit_id
    assert audit_id is not None
    outcome: list[object] = []
    with store.engine.connect() as first:
        first.begin()
        first.execute(
            sa.text(
                "INSERT INTO tokensync_audit_receipts (audit_id, at_ms, receipt)"
                ' VALUES (:a, 1, \'{"by": "first"}\')'
            ),
            {"a": audit_id},
        )

        def second() -> None:
            try:
                outcome.append(attach_receipt(store.engine, audit_id, {"by": "second"}, 2))
            except Exception as e:  # the finding: an IntegrityError (a 500 on the API)
                outcome.append(e)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)  # the second reader is at its insert, waiting for the first
        first.commit()
        thread.join(30)
    assert [False] == outcome
    [entry] = read(store.engine, action="token.revoke")
    assert entry.receipt == {"by": "first"}
