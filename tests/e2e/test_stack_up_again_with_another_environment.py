"""Review: ``stack up`` run again, while the stack's relay, API and workers run, with a
store from the environment that differs from theirs: the settings file must not start
pointing later commands at a store the running processes do not use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import read_settings_file

pytestmark = pytest.mark.e2e


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
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


def test_stack_up_again_with_another_store_in_the_environment_refuses_in_one_line_and_keeps_the_settings(  # noqa: E501
    tmp_path: Path,
) -> None:
    settings_file = tmp_path / ".tokensync" / "settings.env"
    try:
        first = run(tmp_path, {}, "stack", "up", "--regions", "eu")
        assert 0 == first.returncode, first.stdout + first.stderr
        before = read_settings_file(settings_file)

        same = run(tmp_path, {}, "stack", "up", "--regions", "eu")  # nothing changes: fine
        assert 0 == same.returncode, same.stdout + same.stderr

        other = f"sqlite:///{tmp_path / 'other.db'}"
        again = run(tmp_path, {"TOKENSYNC_DATABASE_URL": other}, "stack", "up", "--regions", "eu")
        assert 0 != again.returncode, again.stdout
        lines = again.stderr.strip().splitlines()
        assert 1 == len(lines), again.stderr
        assert "TOKENSYNC_DATABASE_URL" in lines[0] and "stack down" in lines[0]
        # later commands still reach the store the running relay publishes from
        assert before == read_settings_file(settings_file)
    finally:
        run(tmp_path, {}, "stack", "down")
