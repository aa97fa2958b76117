"""The command root loads what it runs: ``--help`` and completing a command name import no
command module, and ``tokensync --help`` / ``validate --help`` start about as fast as their
own imports."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import click

from shared.cli import root
from shared.extras import COMMANDS

BIN = Path(sys.executable).parent
# Nothing a listing of commands needs: the command packages and the heavy libraries.
NOT_FOR_HELP = (
    "producer",
    "workers",
    "stack",
    "bench",
    "gate",
    "faust",
    "aiokafka",
    "kafka",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "uvicorn",
    "matplotlib",
)


def _imported(args: list[str], **env: str) -> set[str]:
    """The modules ``python -X importtime -m shared ARGS`` imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shared", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in NOT_FOR_HELP or m.startswith(NOT_FOR_HELP)}


def test_tokensync_help_imports_no_command_module_and_no_heavy_library() -> None:
    modules = _imported(["--help"])
    assert "shared.cli" in modules
    assert set() == _heavy(modules)


def test_completing_a_command_name_imports_no_command_module() -> None:
    modules = _imported(
        [], COMP_WORDS="tokensync re", COMP_CWORD="1", _TOKENSYNC_COMPLETE="bash_complete"
    )
    assert set() == _heavy(modules)


def test_validate_help_imports_no_other_command_module() -> None:
    modules = _imported(["validate", "--help"])
    assert "shared.validator" in modules
    assert set() == _heavy(modules)


def test_the_root_table_names_every_command_entry_point_with_its_own_short_help() -> None:
    names = {ep.name for ep in entry_points(group="tokensync.commands")}
    assert names == set(COMMANDS)
    ctx = click.Context(root)
    for name in sorted(names):
        command = root.get_command(ctx, name)
        assert command is not None, name
        assert COMMANDS[name].help == command.get_short_help_str(limit=10_000), name


def _seconds(args: list[str], env: dict[str, str] | None = None, *, check: bool = True) -> float:
    start = time.perf_counter()
    subprocess.run(args, capture_output=True, timeout=60, check=check, cwd="/", env=env)
    return time.perf_counter() - start


def test_tokensync_help_validate_help_and_a_validation_start_within_twice_their_imports_time() -> (
    None
):
    """``validate`` is run for real too (settings, validator, one Redis connection attempt):
    its Redis is a closed port, so it answers unavailable at once (exit 3)."""
    from shared.tokenformat import checksum

    token = f"1|{'a' * 40}{checksum('a' * 40)}"
    closed = {**os.environ, "TOKENSYNC_REGIONS": "eu=redis://127.0.0.1:1/0"}
    validate = [str(BIN / "tokensync"), "validate", token, "--region", "eu"]
    answered = subprocess.run(validate, capture_output=True, env=closed, cwd="/", check=False)
    assert 3 == answered.returncode, answered.stderr
    runs: dict[str, list[float]] = {"imports": [], "help": [], "validate_help": [], "validate": []}
    for _ in range(7):  # interleaved, so a busy moment of the machine hits all alike
        runs["imports"].append(
            _seconds([str(BIN / "python"), "-c", "import redis, click, structlog, orjson"])
        )
        runs["help"].append(_seconds([str(BIN / "tokensync"), "--help"]))
        runs["validate_help"].append(_seconds([str(BIN / "tokensync"), "validate", "--help"]))
        runs["validate"].append(_seconds(validate, closed, check=False))
    median = {k: statistics.median(v) for k, v in runs.items()}
    assert median["help"] <= 2 * median["imports"], median
    assert median["validate_help"] <= 2 * median["imports"], median
    assert median["validate"] <= 2 * median["imports"], median
