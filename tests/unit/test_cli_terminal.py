"""What a person sees at a terminal when a command meets something unforeseen."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import run_at_terminal


def test_an_unexpected_exception_prints_one_line_at_a_terminal_and_logs_the_traceback(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".tokensync"
    state.mkdir()
    # a hand-edited stack record: a process without its pid
    (state / "stack.json").write_text('{"processes": [{"name": "kafka"}]}\n')
    result = run_at_terminal(
        tmp_path, ["stack", "status"], timeout_s=60, env_extra={"XDG_CACHE_HOME": str(tmp_path)}
    )
    log = state / "logs" / "cli-errors.log"
    assert 1 == result.code, result.out
    assert "Traceback" not in result.out
    lines = result.out.strip().splitlines()
    assert 1 == len(lines), result.out
    assert "stack status failed unexpectedly: KeyError: 'pid'" in lines[0]
    assert str(log) in lines[0]
    logged = log.read_text()
    assert "Traceback (most recent call last)" in logged and "KeyError: 'pid'" in logged
