"""The CLI's audit actor and odd --reason input."""

from __future__ import annotations

import os
import pwd
import socket

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def test_the_cli_audit_actor_is_the_os_user_not_whatever_logname_says(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 13 item 4: the CLI records 'the OS user and host'. getpass.getuser() reads
    LOGNAME/USER/LNAME/USERNAME first, so anyone running the CLI writes any name they like
    into the audit trail: ``LOGNAME=alice tokensync revoke all ...`` is recorded as alice."""
    monkeypatch.setenv("LOGNAME", "alice-the-scapegoat")
    monkeypatch.setenv("USER", "alice-the-scapegoat")
    run = run_cli(
        monkeypatch, capsys, database_url, "revoke", "principal", "--type", USER, "--id", "3",
        "--reason", "who did this?",
    )  # fmt: skip
    assert 0 == run.code, run.err
    (entry,) = [e for e in audit_log.read(store.engine) if e.actor_kind == "cli"]
    real = f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"
    assert real == entry.actor


def test_a_reason_that_is_not_unicode_text_is_one_line_and_exit_2_not_a_traceback(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--reason $'\\xff'`` (a byte pasted from a log; Python decodes argv with
    surrogateescape) reaches the audit insert unchecked: the CLI dies with a
    UnicodeEncodeError traceback and the responder's revoke all is not done."""
    victim = store.issue(USER, 1, "victim")
    try:
        run = run_cli(
            monkeypatch, capsys, database_url, "revoke", "all", "--before", "now", "--yes",
            "--reason", "leaked \udcff in a log",
        )  # fmt: skip
    except UnicodeEncodeError as e:
        pytest.fail(f"traceback instead of one line: {e!r}")
    assert 2 == run.code
    assert 1 == len(run.err.strip().splitlines())
    assert [victim.id] == [t.id for t in store.list_tokens(USER, 1)], "nothing revoked on error"


@pytest.mark.parametrize("command", [["token", "revoke"], ["token", "find"]])
def test_a_token_given_as_the_id_argument_is_not_echoed_back(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """Issue 13 item 5: the secret travels on stdin, never the command line. A responder
    who pastes the leaked token where the id goes gets click's "'5|…' is not a valid
    integer": the live plaintext is copied into stderr (or the --json error object),
    i.e. into CI logs, terminal recordings and ticket pastes."""
    leaked = store.issue(USER, 1, "leaked").plain_text_token
    secret = leaked.split("|", 1)[1]
    for extra in ([], ["--json"]):
        run = run_cli(monkeypatch, capsys, database_url, *command, leaked, *extra)
        assert 2 == run.code
        assert secret not in run.out + run.err, "the plaintext token is echoed in the error"


@pytest.mark.parametrize("reason", ["\u200b", " \t\u200b\u2060 ", "\ufeff"])
def test_a_reason_of_only_whitespace_or_zero_width_characters_is_no_reason(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reason: str,
) -> None:
    victim = store.issue(USER, 1, "victim")
    run = run_cli(
        monkeypatch, capsys, database_url, "revoke", "principal", "--type", USER, "--id", "1",
        "--reason", reason,
    )  # fmt: skip
    assert 2 == run.code, (run.out, run.err)
    assert "reason" in run.err
    assert [victim.id] == [t.id for t in store.list_tokens(USER, 1)], "nothing revoked"


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_a_token_given_as_a_principal_id_is_not_echoed_back(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: list[str],
) -> None:
    leaked = store.issue(USER, 1, "leaked").plain_text_token
    secret = leaked.split("|", 1)[1]
    for command in (["revoke", "principal", "--reason", "x"], ["token", "list"]):
        run = run_cli(
            monkeypatch, capsys, database_url, *command, "--type", USER, "--id", leaked, *as_json
        )
        assert 2 == run.code, (command, run.out, run.err)
        assert secret not in run.out + run.err, "the plaintext token is echoed in the error"
    run = run_cli(monkeypatch, capsys, database_url, "token", "rotate", leaked, *as_json)
    assert 2 == run.code and secret not in run.out + run.err


def test_a_token_given_as_a_principal_id_on_a_uuid_column_is_not_echoed_back(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a uuidMorphs table (PostgreSQL's uuid type) the error names the column type,
    not the value."""
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE personal_access_tokens (id BIGSERIAL PRIMARY KEY,"
                " tokenable_type VARCHAR(255) NOT NULL, tokenable_id uuid NOT NULL,"
                " name TEXT NOT NULL, token VARCHAR(64) NOT NULL UNIQUE, abilities TEXT,"
                " last_used_at TIMESTAMP, expires_at TIMESTAMP, created_at TIMESTAMP,"
                " updated_at TIMESTAMP)"
            )
        )
    migrate(engine)
    store = TokenStore(engine)
    leaked = store.issue(USER, "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "t").plain_text_token
    secret = leaked.split("|", 1)[1]
    for extra in ([], ["--json"]):
        run = run_cli(
            monkeypatch, capsys, postgres_url, "revoke", "principal", "--type", USER,
            "--id", leaked, "--reason", "x", *extra,
        )  # fmt: skip
        assert 2 == run.code, (run.out, run.err)
        assert "UUID" in run.out + run.err
        assert secret not in run.out + run.err, "the plaintext token is echoed in the error"
    engine.dispose()
