"""``tokensync stack up --relays 2``: two relays, one active (it holds the relay lease), one
standby; ``stack status`` shows which, and after a SIGKILL of the active one the standby
takes over with the next fencing epoch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from stack.process import pid_alive
from tests.e2e.test_stack import tokensync
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.e2e


def relays(cwd: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(tokensync(cwd, "stack", "status", "--json", check=False).stdout)
    return {r["name"]: r for r in rows["processes"] if r["name"].startswith("relay")}


def test_stack_up_with_two_relays_shows_the_active_one_and_the_standby_takes_over(
    tmp_path: Path,
) -> None:
    rows: dict[str, dict[str, Any]] = {}
    try:
        tokensync(tmp_path, "stack", "up", "--relays", "2", "--regions", "eu")
        wait_for(
            lambda: {"active", "standby"} == {r["role"] for r in relays(tmp_path).values()},
            60,
            "one active relay and one standby",
        )
        rows = relays(tmp_path)
        assert {"relay", "relay-2"} == set(rows)
        [active] = [r for r in rows.values() if r["role"] == "active"]
        [standby] = [r for r in rows.values() if r["role"] == "standby"]
        assert active["epoch"] == standby["epoch"] >= 1
        text = tokensync(tmp_path, "stack", "status").stdout
        assert f"(active, epoch {active['epoch']})" in text

        os.kill(active["pid"], signal.SIGKILL)
        wait_for(lambda: relays(tmp_path)[standby["name"]]["role"] == "active", 30, "the take-over")
        assert active["epoch"] < relays(tmp_path)[standby["name"]]["epoch"]
        token = tokensync(tmp_path, "token", "issue", "--type", "User", "--id", "1", "--name", "t")
        plain = token.stdout.strip()
        wait_for(
            lambda: (
                tokensync(tmp_path, "validate", plain, "--region", "eu", check=False).returncode
                == 0
            ),
            60,
            "the token valid in eu through the new relay",
        )
    finally:
        down = tokensync(tmp_path, "stack", "down", "--json", check=False)
    assert down.returncode == 0, down.stderr
    assert [r["name"] for r in rows.values() if pid_alive(r["pid"])] == []
