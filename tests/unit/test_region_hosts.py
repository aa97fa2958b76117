"""``region add`` finds where region workers run through an entry point, never the launcher."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest


def test_importing_the_region_commands_does_not_import_the_local_stack() -> None:
    code = (
        "import sys, producer.region_commands\n"
        "loaded = sorted(m for m in sys.modules if m == 'stack' or m.startswith('stack.'))\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "" == done.stdout.strip(), done.stdout


def test_without_a_registered_worker_host_region_commands_get_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from producer import region_hosts

    monkeypatch.setattr(region_hosts, "entry_points", lambda group: [])
    assert region_hosts.worker_host(tmp_path, {}) is None


def test_a_worker_host_whose_package_is_missing_counts_as_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from producer import region_hosts

    missing = EntryPoint("stack", "no_such_package_here.launcher:LocalStack", "tokensync.regions")
    monkeypatch.setattr(region_hosts, "entry_points", lambda group: [missing])
    assert region_hosts.worker_host(tmp_path, {}) is None


def test_the_local_stack_is_the_registered_worker_host(tmp_path: Path) -> None:
    from producer import region_hosts
    from stack.launcher import LocalStack

    host = region_hosts.worker_host(tmp_path, {})
    assert isinstance(host, LocalStack)
    assert host.running() is False


def test_no_module_of_the_packages_a_service_or_the_authority_installs_imports_the_stack() -> None:
    """The local stack is not the contract (issue 14 item 3): shared, producer, workers and
    gate never import ``stack`` (the benchmarks, extra ``[bench]``, build on it)."""
    import ast

    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{node.lineno}"
        for package in ("shared", "producer", "workers", "gate")
        for path in sorted((root / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and not node.level
            else []
        )
        if name == "stack" or name.startswith("stack.")
    ]
    assert not found, found
