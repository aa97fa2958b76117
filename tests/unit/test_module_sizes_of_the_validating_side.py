"""The validating side's modules hold one concept each: none past ~350 lines unless its
docstring says why (STYLE: a module past ~400 lines usually holds two)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 350
MODULES = [
    *(
        f"shared/{name}.py"
        for name in (
            "abilities",
            "asgi",
            "events",
            "interpret",
            "keys",
            "metrics",
            "nearcache",
            "nearcache_registry",
            "outcomes",
            "policy",
            "region_state",
            "rules",
            "signing",
            "tokenformat",
            "validator",
        )
    ),
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "gate").glob("*.py"))),
    "workers/cache.py",
    "producer/receipts.py",
]


@pytest.mark.parametrize("module", MODULES)
def test_a_module_of_the_validating_side_is_small_or_says_why(module: str) -> None:
    source = (ROOT / module).read_text()
    lines = len(source.splitlines())
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert lines <= LIMIT or "longer than" in docstring.lower(), f"{module}: {lines} lines"
