"""Running the ``tokensync`` command line in-process (piped) or under a pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.cli import main


@dataclass(frozen=True)
class Run:
    """What one command did."""

    code: int
    out: str
    err: str


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    *args: str,
    stdin: str = "",
) -> Run:
    """``tokensync ARGS`` in this process, stdin piped, against ``database_url``."""
    monkeypatch.setenv("TOKENSYNC_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_at_terminal(
    cwd: Path,
    args: list[str],
    *,
    answer: str | None = None,
    interrupt_when: bytes | None = None,
    timeout_s: float = 120.0,
    env_extra: dict[str, str] | None = None,
) -> Run:
    """``tokensync ARGS`` as a child on a pseudo-terminal in ``cwd``, with no
    ``TOKENSYNC_*`` variables but ``env_extra``'s (else the local stack's settings file
    rules). Types ``answer`` at the first ``[y/N]`` prompt; sends SIGINT, as Ctrl-C does,
    once the screen shows ``interrupt_when``; kills the child after ``timeout_s``.
    ``out`` is everything drawn, escape sequences included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **(env_extra or {})})
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "shared", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    answered = interrupted = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if answer is not None and not answered and b"[y/N]" in output:
                os.write(leader, answer.encode() + b"\n")
                answered = True
            if interrupt_when and not interrupted and interrupt_when in output:
                child.send_signal(signal.SIGINT)
                interrupted = True
        elif child.poll() is not None:
            break
    else:
        child.kill()
    code = child.wait(timeout=30)
    os.close(leader)
    return Run(code, output.decode(errors="replace"), "")
