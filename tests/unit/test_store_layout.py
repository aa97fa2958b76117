"""The token store's layout: one concept per module, one facade, one audit path.

Read from the source as text (no database): these are rules about where code lives."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The modules that make up the token store behind ``producer.store.TokenStore``.
STORE_PARTS = (
    "store.py",
    "store_core.py",
    "token_rows.py",
    "epochs.py",
    "regions.py",
    "positions.py",
)


def _python_files() -> list[Path]:
    return [
        p
        for folder in ("producer", "shared", "workers", "gate", "bench", "stack", "tests")
        if (ROOT / folder).is_dir()
        for p in (ROOT / folder).rglob("*.py")
    ]


def test_no_module_takes_anything_but_the_facade_from_producer_store() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}"
        for path in _python_files()
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.module == "producer.store"
        for alias in node.names
        if alias.name != "TokenStore"
    ]
    assert not wrong, "tables, time helpers and records have their own modules:\n" + "\n".join(
        wrong
    )


def test_the_store_writes_every_audit_record_through_one_call() -> None:
    calls = [
        f"{name}:{node.lineno}"
        for name in STORE_PARTS
        if (ROOT / "producer" / name).exists()
        for node in ast.walk(ast.parse((ROOT / "producer" / name).read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "record"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "audit_log"
    ]
    assert len(calls) == 1, calls


def test_no_store_module_is_longer_than_350_lines() -> None:
    long = {
        name: lines
        for name in STORE_PARTS
        if (lines := len((ROOT / "producer" / name).read_text().splitlines())) > 350
    }
    assert not long, long
