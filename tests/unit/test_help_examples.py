"""Every command's ``--help`` exits 0 and ends with examples, and every example parses."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import click
import pytest
import structlog

from shared.cli import main, root


def _walk(
    command: click.Command, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, (*path, name)
            if not sub.hidden:
                yield from _walk(sub, (*path, name))


COMMANDS = sorted(path for path, _ in _walk(root, ()))


def _examples(help_text: str) -> list[str]:
    """The example command lines of the help's last section, ``Examples:``."""
    _head, marker, tail = help_text.rpartition("\n  Examples:\n")
    assert marker, "the help ends with an Examples: section"
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith("#")]


def _parse(line: str) -> tuple[str, ...]:
    """Resolve an example (the ``tokensync ...`` part of a pipeline, before any comment) to
    its command path, parsing its options and arguments as the command line would."""
    inner = re.search(r"\$\((tokensync [^)]*)\)", line)  # eval "$(tokensync ...)"
    words = shlex.split(inner.group(1) if inner else line, comments=True)
    for i, word in enumerate(words):
        if word == "|":
            words = words[i + 1 :]
            break
    for i, word in enumerate(words):
        if word.startswith((">", "<", "2>")):
            words = words[:i]
            break
    assert words[0] == "tokensync", line
    args = words[1:]
    command: click.Command = root
    path: list[str] = []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"no command {args[0]!r} in: {line}"
        path.append(args.pop(0))
        command = sub
    command.make_context("tokensync", list(args), resilient_parsing=False)
    return tuple(path)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A group's callback runs before its subcommand's --help (``bench`` configures logging
    there, onto this test's captured stderr): put structlog back for the tests after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tokensync")
def test_every_commands_help_exits_0_and_ends_with_examples_that_parse(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert 0 == main([*path, "--help"])
    out = capsys.readouterr().out
    examples = _examples(out)
    assert 1 <= len(examples) <= 3, examples
    for line in examples:
        parsed = _parse(line)
        assert parsed[: len(path)] == path, f"{line!r} is an example of another command"
