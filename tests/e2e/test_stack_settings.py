"""One precedence rule for the stack and the commands run next to it: environment, then the
stack's settings file, then defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.settings import read_settings_file

pytestmark = pytest.mark.e2e
USER = "App\\Models\\User"


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``tokensync ARGS`` in ``cwd`` with exactly these ``TOKENSYNC_*`` variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "shared", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert 0 == done.returncode, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_stack_up_follows_a_postgresql_url_from_the_environment_and_a_token_issued_there_is_valid_in_every_region(  # noqa: E501
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"TOKENSYNC_DATABASE_URL": postgres_url}
    try:
        ok(run(tmp_path, env, "stack", "up", "--regions", "eu,us"))
        recorded = read_settings_file(tmp_path / ".tokensync" / "settings.env")
        assert postgres_url == recorded["TOKENSYNC_DATABASE_URL"]

        status = ok(run(tmp_path, env, "stack", "status"))
        assert "" == status.stderr  # the environment agrees with the stack: no note
        lines = status.stdout.splitlines()
        host = urlsplit(postgres_url).hostname
        assert any(ln.startswith("store ") and "postgresql" in ln and host in ln for ln in lines)
        kafka = recorded["TOKENSYNC_KAFKA_BOOTSTRAP"]
        assert any(ln.startswith("kafka ") and kafka in ln for ln in lines), lines
        regions = dict(r.split("=", 1) for r in recorded["TOKENSYNC_REGIONS"].split(","))
        for name, url in regions.items():
            assert any(name in ln and url in ln for ln in lines if ln.startswith("region")), lines

        data: dict[str, Any] = json.loads(
            ok(run(tmp_path, env, "stack", "status", "--json")).stdout
        )
        assert "postgresql" in data["store"] and kafka == data["kafka"]
        assert [{"name": n, "redis_url": u} for n, u in regions.items()] == data["regions"]
        assert {"kafka", "redis-eu", "redis-us", "relay", "worker-eu", "worker-us"} <= {
            p["name"] for p in data["processes"]
        }
        assert all(p["up"] for p in data["processes"])

        token = ok(
            run(tmp_path, env, "token", "issue", "--type", USER, "--id", "7", "--name", "pg")
        ).stdout.strip()
        for region in regions:
            for _ in range(200):  # it reaches every region within moments
                code = run(tmp_path, env, "validate", token, "--region", region).returncode
                if code == 0:
                    break
            assert 0 == code, f"the token is not valid in {region}"
    finally:
        run(tmp_path, env, "stack", "down")


def test_stack_status_never_shows_the_store_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://app:s3cret-pw@db.example:5432/tokens"
    settings = tmp_path / ".tokensync" / "settings.env"
    settings.parent.mkdir()
    settings.write_text(f"TOKENSYNC_DATABASE_URL={url}\n")
    for args in (("stack", "status"), ("stack", "status", "--json")):
        done = run(tmp_path, {}, *args)
        assert "s3cret-pw" not in done.stdout + done.stderr
        assert "app:***@db.example:5432/tokens" in done.stdout, done.stdout


def test_a_command_whose_store_or_kafka_differs_from_the_running_stack_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    try:
        ok(run(tmp_path, {}, "stack", "up", "--no-apps", "--regions", "eu"))
        recorded = read_settings_file(tmp_path / ".tokensync" / "settings.env")

        same = ok(run(tmp_path, {}, "region", "list"))
        assert "" == same.stderr

        other = f"sqlite:///{tmp_path / 'other.db'}"
        moved = ok(run(tmp_path, {"TOKENSYNC_DATABASE_URL": other}, "region", "list"))
        notes = moved.stderr.strip().splitlines()
        assert 1 == len(notes), moved.stderr
        assert "store" in notes[0] and "local stack" in notes[0]
        assert recorded["TOKENSYNC_DATABASE_URL"] in notes[0] and other in notes[0]

        kafka = {"TOKENSYNC_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
        elsewhere = run(tmp_path, kafka, "region", "list", "--json")
        assert 0 == elsewhere.returncode, elsewhere.stderr
        notes = elsewhere.stderr.strip().splitlines()
        assert 1 == len(notes) and "Kafka" in notes[0] and "127.0.0.1:1" in notes[0], notes
        json.loads(elsewhere.stdout)  # the note never mixes into the JSON on stdout
    finally:
        run(tmp_path, {}, "stack", "down")


def test_stack_up_refuses_a_kafka_on_another_host_named_in_the_environment_in_one_line(
    tmp_path: Path,
) -> None:
    done = run(tmp_path, {"TOKENSYNC_KAFKA_BOOTSTRAP": "kafka.prod.example:9092"}, "stack", "up")
    assert 0 != done.returncode
    assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    assert "TOKENSYNC_KAFKA_BOOTSTRAP" in done.stderr and "kafka.prod.example" in done.stderr
    assert not (tmp_path / ".tokensync" / "stack.json").exists()  # nothing was started
