"""The README's layout table matches the tree: every module and Lua script of every
shipped package is named in a row of its package, and every file a row names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "producer", "workers", "gate", "stack", "bench")
# generated or boilerplate files: package markers, ``python -m shared``, alembic revisions
_SKIP = re.compile(r"(^|/)__init__\.py$|^__main__\.py$|^migrations/versions/")


def _rows() -> dict[str, set[str]]:
    section = ROOT.joinpath("README.md").read_text().split("\n## Layout\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    named: dict[str, set[str]] = {}
    for line in section.splitlines():
        row = re.match(r"\| `([\w.]+)/`", line)
        if row:
            files = re.findall(r"`([\w/]+\.(?:py|lua))`", line)
            named.setdefault(row.group(1), set()).update(files)
    return named


def test_every_file_a_row_names_exists() -> None:
    missing = [
        f"{package}/{name}"
        for package, names in _rows().items()
        for name in names
        if not (ROOT / package / name).is_file()
    ]
    assert not missing, missing


def test_every_module_of_every_package_is_named_in_its_row() -> None:
    named = _rows()
    unnamed = [
        f"{package}/{rel}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*"))
        if path.suffix in {".py", ".lua"} and "__pycache__" not in path.parts
        for rel in [str(path.relative_to(ROOT / package))]
        if not _SKIP.search(rel) and rel not in named.get(package, set())
    ]
    assert not unnamed, "README's layout table does not name: " + ", ".join(unnamed)
