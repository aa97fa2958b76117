"""The README's ``--json`` table, read as the contract the tests hold each command to."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
_ROW = re.compile(
    r"^\| `tokensync (?P<command>[^`]+)`(?P<more>[^|]*)\| (?P<kind>[^|]+) \| (?P<fields>.*) \|$"
)
_FIELD = re.compile(r"`([a-z_]+)(\??)`")


@dataclass(frozen=True)
class Shape:
    """One row: the document's kind and its always-present and optional field names."""

    kind: str
    required: frozenset[str]
    optional: frozenset[str]


def documented() -> dict[str, Shape]:
    """``command words`` (e.g. ``revoke principal --dry-run``) -> its documented shape; a
    row naming several commands (``api``, ``relay``, ...) gives each its own entry."""
    text = README.read_text()
    section = text.split("### `--json` output", 1)[1].split("\n### ", 1)[0]
    shapes: dict[str, Shape] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        kind = match["kind"].strip()
        fields = match["fields"]
        if "as `token issue`" in fields:
            shape = shapes["token issue"]
        else:
            top = re.sub(r"\([^)]*\)", "", match["fields"])  # nested fields are in parentheses
            found = _FIELD.findall(top)
            shape = Shape(
                kind,
                frozenset(n for n, opt in found if not opt),
                frozenset(n for n, opt in found if opt),
            )
        command = match["command"].replace("\\|", "|")
        variants = [command]
        if "|" in command:  # revoke principal|ability|all --dry-run
            group, rest = command.split(" ", 1)
            names, _, flags = rest.partition(" ")
            variants = [f"{group} {name} {flags}".strip() for name in names.split("|")]
        variants += re.findall(r"`([a-z]+)`", match["more"])
        for variant in variants:
            shapes[variant] = shape
    return shapes


def document(stdout: str) -> Any:
    """stdout as exactly one JSON document (anything else on stdout fails)."""
    return json.loads(stdout)


def assert_shape(command: str, doc: Any) -> None:
    """``doc`` has the documented kind and fields of ``command``."""
    shape = documented()[command]
    items = doc if shape.kind.startswith("array") else [doc]
    if shape.kind.startswith("array"):
        assert isinstance(doc, list), (command, doc)
    else:
        assert isinstance(doc, dict), (command, doc)
    for item in items:
        keys = set(item)
        assert shape.required <= keys, (command, sorted(shape.required - keys))
        assert keys <= shape.required | shape.optional, (
            command,
            sorted(keys - shape.required - shape.optional),
        )
