"""``--json`` as scripts use it: each command prints exactly one JSON document on stdout
with the fields the README's table documents; a failure is one ``{error, code, exit_code}``
document too. In-process, piped, on SQLite, PostgreSQL and MariaDB where the store is
involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import Run, run_cli
from tests.json_contract import assert_shape, document

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


class Cli:
    """``tokensync ... --json`` in this process against one store, in a folder of its own."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        database_url: str,
    ) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.database_url = database_url

    def run(self, *args: str, stdin: str = "") -> Run:
        return run_cli(
            self.monkeypatch, self.capsys, self.database_url, *args, "--json", stdin=stdin
        )

    def json(self, command: str, *args: str, code: int = 0, stdin: str = "") -> Any:
        """Run ``command args --json``; its stdout, one document of the documented shape."""
        result = self.run(*command.split(), *args, stdin=stdin)
        assert code == result.code, (command, result)
        doc = document(result.out)
        assert_shape(command, doc)
        return doc

    def error(self, *args: str, code: int) -> dict[str, Any]:
        """Run a failing command; its stdout, one ``{error, code, exit_code}`` document."""
        result = self.run(*args)
        assert code == result.code, (args, result)
        doc = document(result.out)
        assert {"error", "code", "exit_code"} == set(doc), doc
        assert code == doc["exit_code"]
        assert "Traceback" not in result.err
        return dict(doc)


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Cli:
    monkeypatch.chdir(tmp_path)  # no local stack's settings file
    monkeypatch.setenv("TOKENSYNC_REGIONS", f"eu={redis_url}")
    return Cli(monkeypatch, capsys, database_url)


def test_every_token_and_revoke_command_prints_its_documented_document(cli: Cli) -> None:
    issued = cli.json("token issue", "--type", USER, "--id", "42", "--name", "a")
    assert issued["token"].startswith(f"{issued['id']}|")
    cli.json("token issue", "--type", USER, "--id", "42", "--name", "b", "--ability", "x:read")
    found = cli.json("token find", str(issued["id"]))
    assert {"eu"} == set(found["regions"])
    listed = cli.json("token list", "--type", USER, "--id", "42")
    assert 2 == len(listed)
    rotated = cli.json("token rotate", str(issued["id"]))
    cli.json("token revoke", str(rotated["id"]), "--reason", "r")
    cli.json("token prune")
    dry = cli.json("revoke principal --dry-run", "--type", USER, "--id", "42")
    assert dry["dry_run"] is True and 1 == dry["tokens"]
    nobody = cli.json("revoke principal", "--type", USER, "--id", "404", "--reason", "r")
    assert nobody["warning"]
    cli.json("revoke principal", "--type", USER, "--id", "42", "--reason", "r")
    cli.json("revoke ability --dry-run", "x:read")
    cli.json("revoke ability", "x:read", "--reason", "r")
    cli.json("revoke all --dry-run", "--before", "now")
    cli.json("revoke all", "--before", "now", "--reason", "r", "--yes")
    trail = cli.json("audit")
    assert len(trail) >= 8
    cli.json("backfill")
    cli.json("store repair", "--yes", "--reason", "r")

    missing = cli.error("token", "find", "999999", code=1)
    assert "not_found" == missing["code"]
    refused = cli.error("revoke", "all", "--before", "now", "--reason", "r", code=2)
    assert "usage" == refused["code"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_validate_and_the_region_commands_print_their_documented_documents(
    cli: Cli, own_redis_url: str, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str
) -> None:
    monkeypatch.setenv("TOKENSYNC_KAFKA_BOOTSTRAP", kafka_bootstrap)  # lag, consumer groups
    token = cli.json("token issue", "--type", USER, "--id", "1", "--name", "a")["token"]
    answer = cli.json("validate", "-", "--region", "eu", code=3, stdin=token)  # no worker
    assert "unavailable" == answer["outcome"]
    cli.json("region list")
    cli.json("region status", code=1)  # not ready: nothing loads it
    added = cli.json("region add", "ap", "--redis", own_redis_url)
    assert (False, False) == (added["worker_started"], added["already_registered"])
    again = cli.json("region add", "ap", "--redis", own_redis_url)
    assert again["already_registered"] is True
    # the same name with another Redis: a usage error, as a JSON document
    clash = cli.error("region", "add", "ap", "--redis", f"{own_redis_url[:-1]}9", code=2)
    assert "usage" == clash["code"] and "already exists" in clash["error"]
    cli.json("region remove", "ap")
    unknown = cli.error("validate", "-", "--region", "nowhere", code=1)
    assert "nowhere" in unknown["error"]
    bogus = cli.error("validate", "-", "--region", "eu", "--bogus", code=2)  # click's own
    assert "usage" == bogus["code"] and "--bogus" in bogus["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_stack_commands_print_their_documented_documents_without_a_stack(cli: Cli) -> None:
    status = cli.json("stack status")
    assert_shape("stack status", status)
    assert (None, []) == (status["settings_file"], status["processes"])
    assert {"stopped": []} == cli.json("stack down")
    cli.json("stack fetch")
    bad = cli.error("stack", "up", "--regions", "", code=1)
    assert "usage" == bad["code"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_doctor_prints_its_checks_as_documented(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str
) -> None:
    monkeypatch.setenv("TOKENSYNC_KAFKA_BOOTSTRAP", kafka_bootstrap)
    result = cli.run("doctor")
    checks = document(result.out)
    assert_shape("doctor", checks)
    assert {0: "pass", 1: "warn", 2: "fail"}[result.code] in {c["outcome"] for c in checks}
