"""A benchmark stopped with SIGTERM (``timeout``, a CI job's cancel) tears its throwaway
deployment down like Ctrl-C does: no Kafka, Redis or PostgreSQL is left running, and the
person sees one line, not a traceback. (Orphaned 1 GiB brokers of killed benchmarks were
found on the shared machine.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.process import pid_alive

pytestmark = pytest.mark.e2e


def _children(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (the servers a benchmark started)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def test_a_benchmark_stopped_with_sigterm_leaves_no_server_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env["TOKENSYNC_BENCH_RESULTS"] = str(tmp_path / "results")
    bench = subprocess.Popen(
        [sys.executable, "-m", "shared", "bench", "apply", "--records", "2000000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: set[int] = set()
    deadline = time.monotonic() + 120
    while len(servers) < 2 and time.monotonic() < deadline:  # Kafka and Redis, at least
        servers |= _children(bench.pid)
        time.sleep(0.2)
    assert len(servers) >= 2, "the benchmark started no servers"
    time.sleep(8)  # inside the fill (2M records take far longer): a producer is talking
    servers |= _children(bench.pid)
    bench.send_signal(signal.SIGTERM)
    _, err = bench.communicate(timeout=90)
    try:
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in servers if pid_alive(p)], "servers left running"
        assert "Traceback" not in err, err[-2000:]
        assert bench.returncode != 0
    finally:
        for pid in servers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
