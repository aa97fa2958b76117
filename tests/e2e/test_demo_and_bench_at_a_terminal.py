"""``tokensync demo`` and ``tokensync bench`` as a person runs them: at a (pseudo-)terminal
and piped, each shows its progress and its final state, exits 0, never a traceback; and
``stack up --json`` / ``demo --json`` as scripts read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import run_at_terminal
from tests.e2e.test_stack import tokensync
from tests.json_contract import assert_shape, document

pytestmark = pytest.mark.e2e

ESCAPE = "\x1b["


def test_demo_at_a_terminal_and_piped_shows_each_step_and_the_verdict(tmp_path: Path) -> None:
    try:
        up = tokensync(tmp_path, "stack", "up", "--regions", "eu", "--json")
        assert_shape("stack up", document(up.stdout))  # progress went to stderr

        screen = run_at_terminal(tmp_path, ["demo"], timeout_s=240)
        assert 0 == screen.code, screen.out[-2000:]
        assert "Traceback" not in screen.out
        for shown in ("tokensync demo: store", "waiting for regions eu", "issue ", "revoke "):
            assert shown in screen.out, (shown, screen.out[-2000:])
        assert "all steps behaved" in screen.out, screen.out[-2000:]

        piped = tokensync(tmp_path, "demo")
        text = piped.stdout + piped.stderr
        assert "Traceback" not in text and ESCAPE not in text, text[-2000:]
        assert "waiting for regions eu" in piped.stdout
        assert "all steps behaved" == piped.stdout.strip().splitlines()[-1]

        scripted = document(tokensync(tmp_path, "demo", "--json").stdout)
        assert_shape("demo", scripted)
        assert scripted["ok"] is True and ["eu"] == scripted["regions"]
    finally:
        tokensync(tmp_path, "stack", "down", check=False)


def _bench_piped(cwd: Path, results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_BENCH_RESULTS"] = str(results)
    return subprocess.run(
        [sys.executable, "-m", "shared", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def test_bench_at_a_terminal_and_piped_shows_its_steps_the_table_and_where_results_went(
    tmp_path: Path,
) -> None:
    # the cheapest scenario at its smallest: a throwaway Kafka and Redis, 1000 records
    args = ["apply", "--records", "1000"]
    results = tmp_path / "results"
    screen = run_at_terminal(
        tmp_path,
        ["bench", *args],
        timeout_s=240,
        env_extra={"TOKENSYNC_BENCH_RESULTS": str(results)},
    )
    assert 0 == screen.code, screen.out[-2000:]
    assert "Traceback" not in screen.out
    assert "bench apply: starting" in screen.out, screen.out[-2000:]
    assert "records/s" in screen.out
    assert "bench apply: done in" in screen.out and str(results) in screen.out
    assert 1000 == json.loads((results / "apply.json").read_text())["records"]

    piped = _bench_piped(tmp_path, tmp_path / "piped", *args)
    assert 0 == piped.returncode, piped.stderr[-2000:]
    text = piped.stdout + piped.stderr
    assert "Traceback" not in text and ESCAPE not in text, text[-2000:]
    assert "bench apply: starting" in piped.stderr
    assert "records/s" in piped.stdout
    assert "bench apply: done in" in piped.stderr
    assert (tmp_path / "piped" / "apply.json").is_file()
