"""``tokensync completion bash|zsh|fish`` prints a script that completes in a real shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _tokensync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tokensync"), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _tokensync_completion tokensync"),
        ("zsh", "compdef _tokensync_completion tokensync"),
        ("fish", "complete --no-files --command tokensync"),
    ],
)
def test_completion_prints_the_script_for_each_shell(shell: str, marker: str) -> None:
    done = _tokensync("completion", shell)
    assert (0, "") == (done.returncode, done.stderr)
    assert marker in done.stdout


def test_completion_of_an_unknown_shell_is_one_line_and_exit_2() -> None:
    done = _tokensync("completion", "tcsh")
    assert 2 == done.returncode
    assert "tcsh" in done.stderr
    assert "Traceback" not in done.stderr


def _complete_in_bash(words: str) -> list[str]:
    """What bash offers after sourcing ``tokensync completion bash`` and pressing TAB
    after ``words`` (the last word is the one being completed)."""
    bash = shutil.which("bash")
    assert bash, "bash is installed"
    script = f"""
source <(tokensync completion bash)
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
[[ "{words}" == *" " ]] && COMP_WORDS+=("") && COMP_CWORD=$(( COMP_CWORD + 1 ))
_tokensync_completion tokensync
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        check=False,
    )
    assert (0, "") == (done.returncode, done.stderr)
    return done.stdout.split()


def test_bash_completes_tokensync_re_to_region_relay_and_revoke() -> None:
    assert ["region", "relay", "revoke"] == _complete_in_bash("tokensync re")


def test_bash_completes_a_subcommand_of_a_group() -> None:
    assert ["add"] == _complete_in_bash("tokensync region a")


def test_bash_completes_a_commands_options() -> None:
    assert {"--region", "--ability"} <= set(_complete_in_bash("tokensync validate --"))
