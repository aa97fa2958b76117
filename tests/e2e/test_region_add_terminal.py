"""``tokensync region add`` at a real (pseudo-)terminal, as a platform team runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack import RedisServer, free_port, stop_pid
from tests.cli_helpers import run_at_terminal
from tests.e2e.test_stack import tokensync

pytestmark = pytest.mark.e2e


def _regions(cwd: Path) -> dict[str, str]:
    listed = json.loads(tokensync(cwd, "region", "list", "--json").stdout)
    return {r["region"]: r["redis_url"] for r in listed}


def test_region_add_at_a_terminal_shows_progress_survives_ctrl_c_and_a_rerun_finishes_it(
    tmp_path: Path, own_redis_url: str
) -> None:
    later = None
    try:
        up = run_at_terminal(tmp_path, ["stack", "up", "--regions", "eu"], timeout_s=240)
        assert 0 == up.code, up.out[-1500:]
        assert "Traceback" not in up.out and "redis-eu" in up.out, up.out[-1500:]
        # its progress while it waits (Kafka takes seconds), then the final state
        for shown in ("starting kafka, redis-eu", "kafka, redis-eu ready after", "starting relay"):
            assert shown in up.out, (shown, up.out[-1500:])
        assert up.out.index("starting kafka") < up.out.index("worker-eu")

        status = run_at_terminal(tmp_path, ["stack", "status"], timeout_s=60)
        assert 0 == status.code, status.out[-1500:]
        assert "Traceback" not in status.out
        shown = status.out.splitlines()
        for first in ("store ", "kafka ", "region "):
            assert any(ln.startswith(first) for ln in shown), (first, status.out)
        assert any("worker-eu" in ln and " up" in ln for ln in shown), status.out

        added = run_at_terminal(tmp_path, ["region", "add", "ap", "--redis", own_redis_url])
        assert 0 == added.code, added.out[-1500:]
        assert "Traceback" not in added.out
        assert "bootstrap ap" in added.out and "records" in added.out, added.out[-1500:]
        assert "region ap registered" in added.out and "region ap ready after" in added.out
        assert own_redis_url == _regions(tmp_path)["ap"]

        again = run_at_terminal(tmp_path, ["region", "add", "ap", "--redis", own_redis_url])
        assert 0 == again.code, again.out[-1500:]
        assert "region ap exists" in again.out and "region ap ready after" in again.out

        # Ctrl-C while the region loads (its Redis is not up yet): added and loading, one line
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        stopped = run_at_terminal(
            tmp_path,
            ["region", "add", "late", "--redis", url],
            interrupt_when=b"bootstrap late",
        )
        assert 130 == stopped.code, stopped.out[-1500:]
        assert "Traceback" not in stopped.out
        assert "region late is added and its worker keeps loading" in stopped.out
        assert url == _regions(tmp_path)["late"]

        # piped, the same wait prints its progress as lines; still not ready: exit 1
        piped = tokensync(
            tmp_path, "region", "add", "late", "--redis", url, "--timeout", "5", check=False
        )
        assert 1 == piped.returncode
        progress = [ln for ln in piped.stderr.splitlines() if ln.startswith("bootstrap late:")]
        assert len(progress) >= 2, piped.stderr
        assert "region late not ready after 5 s" in piped.stdout
        assert "Traceback" not in piped.stdout + piped.stderr

        server = RedisServer("late", tmp_path / "redis-late", port, 16)
        later = server.start()
        server.wait_ready(later)
        finished = run_at_terminal(tmp_path, ["region", "add", "late", "--redis", url])
        assert 0 == finished.code, finished.out[-1500:]
        assert "Traceback" not in finished.out
        assert "region late ready after" in finished.out

        clash = tokensync(tmp_path, "region", "add", "late", "--redis", own_redis_url, check=False)
        assert 0 != clash.returncode and "already exists with Redis" in clash.stderr
        assert 1 == len(clash.stderr.strip().splitlines())
    finally:
        tokensync(tmp_path, "stack", "down", check=False)
        if later is not None:
            stop_pid(later.pid)
