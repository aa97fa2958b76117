"""Where an unexpected error's traceback goes, and what of the command line it records."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.cli import _command_path, crash_log_path


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
