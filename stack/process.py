"""Child processes of the local stack: start with a log file, probe, stop by pid.

A process is recorded as ``ProcessRecord`` (name, pid, port, argv, log) in the
stack's state file, so that ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.errors import StackError

__all__ = [
    "ProcessRecord",
    "child_process",
    "free_port",
    "log_hint",
    "pid_alive",
    "port_open",
    "start_process",
    "stop_pid",
    "wait_until",
]


@dataclass(frozen=True)
class ProcessRecord:
    """One process the stack started."""

    name: str
    pid: int
    port: int | None
    argv: tuple[str, ...]
    log: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """The inverse of ``to_json``."""
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            port=None if data.get("port") is None else int(data["port"]),
            argv=tuple(str(a) for a in data["argv"]),
            log=str(data["log"]),
        )

    @property
    def alive(self) -> bool:
        """Whether the recorded pid still runs this process's program."""
        return pid_alive(self.pid, self.argv[0] if self.argv else None)


# Popen objects of the children this process started: kept so that they are reaped by
# ``stop_pid`` instead of warning "still running" when garbage-collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# Ports this process handed out: a server picked now may bind seconds later, and the
# kernel could offer the same free port to the next caller meanwhile.
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, never the same one twice per process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int, program: str | None = None) -> bool:
    """Whether ``pid`` runs (and is not a zombie), optionally running ``program``.

    A child this process started is judged by its ``Popen`` handle alone: its command
    line is no evidence, since servers such as Redis rewrite it (set-proc-title) right
    after they bind their port, and a read in that instant sees an empty one. ``program``
    guards only against pid reuse for processes recorded by an earlier command.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        return _child_alive(pid, child)
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if program is not None:
            return _runs(pid, Path(program).name.encode())
    except (OSError, IndexError):
        pass
    return True


def _runs(pid: int, program: bytes) -> bool:
    # a process rewriting its title blanks its command line for an instant: look again
    for attempt in range(3):
        if any(program in part for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")):
            return True
        if attempt < 2:
            time.sleep(0.02)
    return False


def start_process(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
) -> ProcessRecord:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as e:
            raise StackError(f"cannot start {name} ({argv[0]}): {e.strerror}") from e
    _CHILDREN[proc.pid] = proc
    return ProcessRecord(name=name, pid=proc.pid, port=port, argv=tuple(argv), log=str(log))


def child_process(pid: int) -> subprocess.Popen[bytes] | None:
    """The ``Popen`` handle of a child this process started and has not seen exit."""
    return _CHILDREN.get(pid)


def _child_alive(pid: int, child: subprocess.Popen[bytes]) -> bool:
    if child.poll() is None:
        return True
    del _CHILDREN[pid]
    return False


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, program: str | None = None, grace_s: float = 20.0) -> bool:
    """SIGTERM ``pid``, escalate to SIGKILL after ``grace_s``; True if it had been running."""
    if not pid_alive(pid, program):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        _reap(pid)
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    return True


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    log: Path | None = None,
    *,
    interval_s: float = 0.05,
) -> None:
    """Poll ``predicate()`` until true, or raise StackError naming ``what`` and the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise StackError(f"{what} did not come up within {timeout_s:.0f} s{log_hint(log)}")


def log_hint(log: Path | str | None) -> str:
    """``"; see LOG (last line: ...)"``: enough to diagnose a failed start from CI output."""
    if log is None:
        return ""
    try:
        lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    last = f" (last line: {lines[-1].strip()[-300:]})" if lines else ""
    return f"; see {log}{last}"
