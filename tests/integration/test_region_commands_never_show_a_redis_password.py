"""Review: ``region add`` and ``region list`` show a region's Redis URL without its password
(text and --json, stdout and stderr), on every store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SECRET = "hunter2secret"


def _tokensync(cwd: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "shared", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_region_add_and_list_never_show_the_redis_password(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    # the session's Redis has no password: AUTH fails, so 'does not answer' is shown too
    with_password = redis_url.replace("redis://", f"redis://:{SECRET}@", 1)
    shown = "redis://:***@" + with_password.split("@", 1)[1]
    added = _tokensync(
        tmp_path, database_url, "region", "add", "mars", "--redis", with_password, "--no-wait"
    )
    assert 0 == added.returncode, added.stdout + added.stderr
    assert "region mars registered" in added.stdout
    assert shown in added.stdout + added.stderr
    outputs = [added.stdout + added.stderr]
    for args in (
        ("region", "add", "mars", "--redis", with_password, "--no-wait", "--json"),
        ("region", "add", "mars", "--redis", redis_url + "9", "--no-wait"),  # another URL
        ("region", "list"),
        ("region", "list", "--json"),
    ):
        done = _tokensync(tmp_path, database_url, *args)
        outputs.append(done.stdout + done.stderr)
    assert "mars" in outputs[3]
    assert [] == [o for o in outputs if SECRET in o]
