"""Review: a worker stopped (SIGTERM) while it is still starting, before it joined its
consumer group, leaves no faust data directory behind in the temp dir."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

from stack.process import free_port
from tests.kafka_helpers import wait_for


def test_a_worker_stopped_while_it_waits_for_kafka_leaves_no_data_directory(
    redis_url: str, tmp_path: Path
) -> None:
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    err = tmp_path / "worker.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env |= {
        "TMPDIR": str(tmp),
        "TOKENSYNC_LOG_FORMAT": "json",
        "TOKENSYNC_REGIONS": f"eu={redis_url}",
        # nobody listens there: the worker retries reading the cluster id (about a minute)
        "TOKENSYNC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "TOKENSYNC_SIGNING_KEYS": "k1:" + base64.b64encode(b"k" * 32).decode(),
        "TOKENSYNC_ALLOW_EVICTION": "true",
    }
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared", "worker", "--region", "eu"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "kafka_metadata_retry" in err.read_text(errors="replace"), 30)
        assert list(tmp.iterdir()), "faust's data directory exists while the worker starts"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM  # it ended itself, not killed by the signal
    assert [] == [p.name for p in tmp.iterdir()]
    assert [] == list(cwd.iterdir())
