"""``region add`` in a production deployment: the local stack is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Runs the tokensync command as an install without the stack package would: neither the
# ``stack`` modules nor its entry points exist.
_WITHOUT_STACK = """
import importlib.abc, importlib.metadata, sys

class NoStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "stack" or name.startswith("stack."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoStack())
_real = importlib.metadata.entry_points

def entry_points(**params):
    found = _real(**params)
    return [ep for ep in found if not ep.value.startswith("stack")]

importlib.metadata.entry_points = entry_points
from shared.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _tokensync(cwd: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_STACK, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_region_add_without_the_stack_installed_registers_the_region_and_says_to_start_a_worker(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    added = _tokensync(tmp_path, database_url, "region", "add", "mars", "--redis", redis_url)
    assert 0 == added.returncode, added.stdout + added.stderr
    assert "Traceback" not in added.stdout + added.stderr
    assert "region mars registered" in added.stdout
    assert "the local stack is not installed" in added.stdout
    assert f"tokensync worker --region mars --redis {redis_url}" in added.stdout

    listed = _tokensync(tmp_path, database_url, "region", "list", "--json")
    assert 0 == listed.returncode, listed.stderr
    assert {"region": "mars", "redis_url": redis_url} in json.loads(listed.stdout)

    as_json = _tokensync(
        tmp_path, database_url, "region", "add", "mars", "--redis", redis_url, "--json"
    )
    assert 0 == as_json.returncode, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["already_registered"] is True and data["worker_started"] is False
    assert "not installed" == data["local_stack"]
