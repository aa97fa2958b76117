"""Incident-grade lookups: a token found and revoked from its text, its bare secret (stdin,
never argv), its SHA-256 or its id; over the CLI and the HTTP API; errors as JSON too."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from producer.audit import read
from producer.store import TokenStore
from tests.cli_helpers import run_cli
from tests.harness import Pipeline

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
ADMIN = "tokensync"


def secret_of(token: str) -> str:
    return token.split("|", 1)[1]


def test_find_takes_the_token_or_bare_secret_on_stdin_a_hash_or_an_id(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = store.issue(USER, 42, "laptop", ["orders:read"])
    bare = secret_of(issued.plain_text_token)
    digest = hashlib.sha256(bare.encode()).hexdigest()
    found = []
    for args, stdin in [
        (["--text", "-"], issued.plain_text_token + "\n"),
        (["--text", "-"], bare),
        (["--text", "-"], f"Authorization: Bearer {bare}"[len("Authorization: ") :]),
        (["--hash", digest.upper()], ""),
        ([str(issued.id)], ""),
    ]:
        run = run_cli(
            monkeypatch, capsys, database_url, "token", "find", *args, "--json", stdin=stdin
        )
        assert 0 == run.code, run.out + run.err
        found.append(json.loads(run.out))
    assert {issued.id} == {f["id"] for f in found}
    first = found[0]
    assert (USER, 42, "laptop", ["orders:read"], {}) == (
        first["tokenable_type"],
        first["tokenable_id"],
        first["name"],
        first["abilities"],
        first["regions"],
    )
    assert {"created_at", "last_used_at", "expires_at"} <= set(first)
    text = run_cli(monkeypatch, capsys, database_url, "token", "find", "--text", "-", stdin=bare)
    assert f"token {issued.id}: {USER}:42" in text.out and "last used  never" in text.out
    assert bare not in text.out + json.dumps(found)


def test_the_secret_is_never_taken_from_the_command_line_and_errors_keep_their_exit_codes(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = store.issue(USER, 1, "t")
    bare = secret_of(issued.plain_text_token)
    argv = run_cli(monkeypatch, capsys, database_url, "token", "find", "--text", bare)
    assert 2 == argv.code and "stdin" in argv.err and bare not in argv.err
    cases = {
        "unknown": (["token", "find", "--text", "-"], "9|" + "x" * 48, 1, "not_found"),
        "no ref": (["token", "revoke"], "", 2, "usage"),
        "two refs": (["token", "find", "1", "--hash", "ab" * 32], "", 2, "usage"),
        "bad hash": (["token", "revoke", "--hash", "xyz"], "", 2, "usage"),
        "bad id": (["token", "revoke", "abc"], "", 2, "usage"),
        "unknown id": (["token", "revoke", "999999"], "", 1, "not_found"),
    }
    for name, (args, stdin, code, kind) in cases.items():
        text = run_cli(monkeypatch, capsys, database_url, *args, stdin=stdin)
        as_json = run_cli(monkeypatch, capsys, database_url, *args, "--json", stdin=stdin)
        assert (code, code) == (text.code, as_json.code), name
        assert 1 == len(text.err.strip().splitlines()) and "Traceback" not in text.err, name
        body = json.loads(as_json.out)
        assert (kind, code) == (body["code"], body["exit_code"]) and body["error"], name
    assert [issued.id] == [t.id for t in store.list_tokens(USER, 1)]


def test_revoke_takes_a_bare_secret_on_stdin_or_a_hash(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = store.issue(USER, 1, "a")
    b = store.issue(USER, 1, "b")
    keep = store.issue(USER, 1, "keep")
    by_text = run_cli(
        monkeypatch,
        capsys,
        database_url,
        "token",
        "revoke",
        "--text",
        "-",
        "--reason",
        "pasted",
        "--json",
        stdin=secret_of(a.plain_text_token),
    )
    assert 0 == by_text.code, by_text.err
    by_hash = run_cli(monkeypatch, capsys, database_url, "token", "revoke", "--hash", b.token_hash)
    assert 0 == by_hash.code and f"token {b.id}" in by_hash.out
    assert [keep.id] == [t.id for t in store.list_tokens(USER, 1)]


def test_the_api_looks_up_and_revokes_by_secret_in_the_body(
    client: httpx.Client, store: TokenStore
) -> None:
    responder = store.issue(ADMIN, 0, "responder", ["tokens:revoke", "revocations:mass"])
    reader = store.issue(ADMIN, 1, "reader", ["tokens:read"])
    victim = store.issue(USER, 3, "leaked", ["orders:read"])
    bare = secret_of(victim.plain_text_token)
    as_reader = {"Authorization": f"Bearer {reader.plain_text_token}"}
    as_responder = {"Authorization": f"Bearer {responder.plain_text_token}"}
    for body in ({"token": victim.plain_text_token}, {"token": bare}, {"hash": victim.token_hash}):
        found = client.post("/v1/tokens/lookup", json=body, headers=as_reader)
        assert (200, victim.id) == (found.status_code, found.json()["id"])
        assert bare not in found.text
    assert (
        403
        == client.post("/v1/tokens/lookup", json={"token": bare}, headers=as_responder).status_code
    )
    assert (
        422
        == client.post(
            "/v1/tokens/lookup", json={"token": bare, "id": victim.id}, headers=as_reader
        ).status_code
    )
    assert (
        404
        == client.post("/v1/tokens/lookup", json={"hash": "0" * 64}, headers=as_reader).status_code
    )
    revoked = client.post(
        "/v1/tokens/revoke", json={"token": bare, "reason": "scanner hit"}, headers=as_responder
    )
    assert (200, victim.id) == (revoked.status_code, revoked.json()["token_id"])
    assert [] == store.list_tokens(USER, 3)


def test_find_says_which_regions_accept_the_token_before_and_after_a_revoke_with_receipt(
    one_region: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = one_region
    pipeline.start_relay()
    pipeline.start_worker("eu")
    pipeline.wait_ready("eu")
    issued = pipeline.store.issue(USER, 1, "t")
    pipeline.wait_applied(issued.seq)
    for key, value in pipeline.settings.to_env().items():
        monkeypatch.setenv(key, value)
    url = pipeline.settings.database_url

    def regions() -> dict[str, str]:
        run = run_cli(
            monkeypatch, capsys, url, "token", "find", "--hash", issued.token_hash, "--json"
        )
        assert 0 == run.code, run.err
        answer: dict[str, str] = json.loads(run.out)["regions"]
        return answer

    assert {"eu": "valid"} == regions()
    revoked = run_cli(
        monkeypatch,
        capsys,
        url,
        "token",
        "revoke",
        "--hash",
        issued.token_hash,
        "--reason",
        "INC-1",
        "--wait",
        "--json",
    )
    assert 0 == revoked.code, revoked.err
    assert json.loads(revoked.out)["receipt"]["complete"]
    [entry] = read(pipeline.store.engine, action="token.revoke")  # the CLI attached it
    assert ("INC-1", True) == (
        entry.reason,
        entry.receipt is not None and entry.receipt["complete"],
    )
    gone = run_cli(
        monkeypatch,
        capsys,
        url,
        "token",
        "find",
        "--text",
        "-",
        "--json",
        stdin=secret_of(issued.plain_text_token),
    )
    body = json.loads(gone.out)  # the store no longer holds it; the regions still answer
    assert (1, "not_found", {"eu": "invalid"}) == (gone.code, body["code"], body["regions"])
