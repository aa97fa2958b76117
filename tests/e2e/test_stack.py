"""``tokensync stack up | status | down`` on real binaries, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.settings import Settings, read_settings_file
from stack.process import pid_alive

pytestmark = pytest.mark.e2e


def tokensync(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tokensync command in ``cwd``; a failure shows its output and the stack's logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    done = subprocess.run(
        [sys.executable, "-m", "shared", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    if check and done.returncode != 0:
        logs = sorted((cwd / ".tokensync" / "logs").glob("*.log"))
        tails = "".join(
            f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            for log in logs
        )
        raise AssertionError(
            f"tokensync {' '.join(args)} exited {done.returncode}\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}{tails}"
        )
    return done


def test_stack_up_status_and_down_manage_exactly_their_own_processes(tmp_path: Path) -> None:
    try:
        up = tokensync(tmp_path, "stack", "up", "--no-apps", "--regions", "eu,us")
        # piped, its progress is plain lines on stderr: what starts, then when it is ready
        progress = up.stderr.splitlines()
        assert "starting kafka, redis-eu, redis-us" in progress, up.stderr
        assert any(ln.startswith("kafka, redis-eu, redis-us ready after") for ln in progress)
        assert "\x1b[" not in up.stdout + up.stderr
        rows: list[dict[str, Any]] = json.loads(
            tokensync(tmp_path, "stack", "status", "--json").stdout
        )["processes"]
        assert {"kafka", "redis-eu", "redis-us"} == {r["name"] for r in rows}
        assert all(r["up"] for r in rows)

        settings = Settings.from_env(read_settings_file(tmp_path / ".tokensync/settings.env"))
        assert [r.name for r in settings.regions] == ["eu", "us"]
        for region in settings.regions:
            client = redis.Redis.from_url(region.redis_url)
            assert client.ping()
            client.close()
        assert settings.signing_keys, "stack up generates a signing key"

        kept = tokensync(tmp_path, "stack", "up", "--no-apps", "--regions", "eu,us")
        assert "starting" not in kept.stderr, kept.stderr  # nothing was started again
        again = json.loads(tokensync(tmp_path, "stack", "status", "--json").stdout)["processes"]
        assert {r["name"]: r["pid"] for r in rows} == {r["name"]: r["pid"] for r in again}
    finally:
        down = tokensync(tmp_path, "stack", "down", "--json", check=False)
    assert down.returncode == 0, down.stderr
    assert {"kafka", "redis-eu", "redis-us"} == set(json.loads(down.stdout)["stopped"])
    assert [r["name"] for r in rows if pid_alive(r["pid"])] == []


def test_a_wrong_argument_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    result = tokensync(tmp_path, "stack", "up", "--regions", "", check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_a_delayed_link_slows_exactly_its_region(tmp_path: Path) -> None:
    try:
        tokensync(tmp_path, "stack", "up", "--regions", "eu,us", "--link-delay", "us=60ms")
        rows = json.loads(tokensync(tmp_path, "stack", "status", "--json").stdout)["processes"]
        assert {"link-us"} == {r["name"] for r in rows if r["name"].startswith("link-")}
        assert all(r["up"] for r in rows)
        demo = tokensync(tmp_path, "demo", "--json", check=False)
        assert 0 == demo.returncode, demo.stdout + demo.stderr
        revokes = [s for s in json.loads(demo.stdout)["steps"] if s["name"] == "revoke"]
        assert all(s["per_region_ms"]["us"] >= 60 for s in revokes)
        assert all(s["per_region_ms"]["eu"] < s["per_region_ms"]["us"] for s in revokes)
    finally:
        down = tokensync(tmp_path, "stack", "down", "--json", check=False)
    assert "link-us" in json.loads(down.stdout)["stopped"]
