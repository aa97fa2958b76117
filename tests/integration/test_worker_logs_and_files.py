"""What a worker and a relay leave behind: JSON lines only (theirs and their libraries'), one
canonical line per unit of work, and no files in the working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from stack.process import stop_pid
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for

USER = "App\\Models\\User"


def _start(
    pipeline: Pipeline, args: list[str], cwd: Path, tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """A tokensync process in ``cwd`` with ``TMPDIR=tmp``; its stderr (only) in a file."""
    err = pipeline.tmp_path / f"{name}.stderr"
    env = {**pipeline.env(), "TMPDIR": str(tmp), "TOKENSYNC_LOG_FORMAT": "json"}
    with err.open("ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    return proc, err


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_pid(proc.pid, sys.executable, grace_s=30)
    proc.wait(timeout=30)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line in {path.name}: {line!r}") from None
    return parsed


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    return cwd, tmp


def test_a_worker_run_leaves_nothing_in_its_working_directory_or_temp_dir(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.start_relay()
    cwd, tmp = _dirs(tmp_path)
    worker, _ = _start(pipeline, ["worker", "--region", "eu"], cwd, tmp, "worker-eu")
    try:
        pipeline.wait_ready("eu")
        assert list(tmp.iterdir()), "faust's data directory is a temporary one while running"
    finally:
        _stop(worker)
    assert worker.returncode == 0
    assert [] == list(cwd.iterdir())
    assert [] == list(tmp.iterdir())


def test_json_logs_of_a_worker_and_a_relay_are_json_on_every_line_with_one_line_per_batch(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    cwd, tmp = _dirs(tmp_path)
    relay, relay_err = _start(pipeline, ["relay"], cwd, tmp, "relay")
    worker, worker_err = _start(pipeline, ["worker", "--region", "eu"], cwd, tmp, "worker-eu")
    pipeline.workers["eu"], pipeline.worker_regions["eu"] = worker, "eu"
    try:
        pipeline.wait_ready("eu")
        with capture_logs() as store_lines:
            issued = pipeline.store.issue(USER, 42, "ci")
            revoked = pipeline.store.revoke_token(issued.id)
        pipeline.wait_applied(revoked.seq)
        wait_for(
            lambda: any(
                line.get("event") == "batch_published" and line.get("last_seq", 0) >= revoked.seq
                for line in _json_lines(relay_err)
            ),
            30,
            "the relay's batch_published line",
        )
    finally:
        pipeline.workers.pop("eu", None)
        pipeline.worker_regions.pop("eu", None)
        _stop(worker)
        _stop(relay)

    secret = issued.plain_text_token.split("|", 1)[1]
    for path in (relay_err, worker_err):
        assert secret not in path.read_text(errors="replace")
    relay_lines, worker_lines = _json_lines(relay_err), _json_lines(worker_err)

    published = [line for line in relay_lines if line["event"] == "batch_published"]
    assert published and all(line["level"] == "info" for line in published)
    assert {"records", "first_seq", "last_seq", "partitions"} <= published[-1].keys()

    applied = [line for line in worker_lines if line["event"] == "batch_applied"]
    assert applied and all(line["level"] == "info" for line in applied)
    assert all(line["region"] == "eu" for line in applied)
    assert sum(line["applied"] for line in applied) >= 2  # the issue and the revocation
    assert {"records", "offsets", "stale", "dead_letters", "duration_ms"} <= applied[-1].keys()

    # the libraries' own lines (faust, mode, aiokafka, kafka-python) are there, as JSON
    library = {
        line["logger"].split(".")[0] for line in relay_lines + worker_lines if "logger" in line
    }
    assert library & {"faust", "mode", "aiokafka", "kafka"}, "no library line was logged"

    events = {line["event"]: line for line in store_lines}
    assert events["token_issued"]["token_id"] == issued.id
    assert events["token_issued"]["log_level"] == "info"
    assert events["token_revoked"]["token_id"] == issued.id
    assert events["token_revoked"]["seq"] == revoked.seq
    assert secret not in repr(store_lines)
