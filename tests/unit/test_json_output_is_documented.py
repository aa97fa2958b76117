"""Every command that takes ``--json`` has its fields documented in the README's table."""

from __future__ import annotations

import click

from shared.cli import root
from tests.json_contract import documented


def _commands_with_json() -> set[str]:
    ctx = click.Context(root)
    found: set[str] = set()

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, name])
        elif any("--json" in p.opts for p in command.params if isinstance(p, click.Option)):
            found.add(" ".join(path))

    walk(root, [])
    return found


def test_every_command_with_json_has_a_row_in_the_readme_and_every_row_a_command() -> None:
    rows = {name for name in documented() if "--" not in name}
    assert _commands_with_json() == rows


def test_every_documented_document_names_its_fields() -> None:
    for command, shape in documented().items():
        if shape.kind == "log lines":
            continue
        assert shape.kind in {"object", "array of objects"}, command
        assert shape.required, command
