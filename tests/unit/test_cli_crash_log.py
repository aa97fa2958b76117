"""Where an unexpected error's traceback goes, and what of the command line it records."""

from __future__ import annotations

import signal
from pathlib import Path

import click
import pytest

from shared.cli import _command_path, crash_log_path, main


def test_the_crash_log_is_in_the_stack_directory_when_there_is_one(tmp_path: Path) -> None:
    (tmp_path / ".tokensync").mkdir()
    assert tmp_path / ".tokensync" / "logs" / "cli-errors.log" == crash_log_path(tmp_path)


def test_the_crash_log_is_in_the_user_cache_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert tmp_path / "cache" / "tokensync" / "cli-errors.log" == crash_log_path(tmp_path)


def test_the_recorded_command_holds_its_words_never_its_arguments() -> None:
    assert ["validate"] == _command_path(["validate", "12|secret", "--region", "eu"])
    assert ["region", "add"] == _command_path(["region", "add", "ap", "--redis", "redis://x"])
    assert [] == _command_path(["--version"])


def _entry_point_commands() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="tokensync.commands"))


def _leaf(name: str) -> tuple[click.Command, list[str], str]:
    """A command of entry point ``name`` that runs (a group's first subcommand), the words
    that reach it with its required parameters filled in, and its command path."""
    from shared.cli import root

    command = root.get_command(click.Context(root), name)
    assert command is not None, name
    words = [name]
    while isinstance(command, click.Group):
        sub = sorted(command.commands)[0]
        words.append(sub)
        command = command.commands[sub]
    path = " ".join(words)
    for param in command.params:
        if not param.required:
            continue
        value = param.type.choices[0] if isinstance(param.type, click.Choice) else "1"
        words += [str(value)] if isinstance(param, click.Argument) else [param.opts[0], str(value)]
    return command, words, path


@pytest.mark.parametrize("name", _entry_point_commands())
def test_an_unexpected_exception_in_a_command_of_every_entry_point_is_one_line_and_a_logged_traceback(  # noqa: E501
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """bench, stack, gate, workers and producer are packages of their own, found through
    entry points: a bug in any of their commands meets the same boundary."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tokensync").mkdir()
    monkeypatch.setenv("TOKENSYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    command, words, path = _leaf(name)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"a bug in {command.name}")

    monkeypatch.setattr(command, "callback", crash)
    sigterm = signal.getsignal(signal.SIGTERM)  # `bench` installs its own handler
    try:
        assert 1 == main(words)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    assert "" == out and "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 == len(lines), err
    log = tmp_path / ".tokensync" / "logs" / "cli-errors.log"
    assert lines[0].startswith(
        f"tokensync: {path} failed unexpectedly: RuntimeError: a bug in {command.name} ("
    ), lines
    assert str(log) in lines[0]
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "in crash" in logged
