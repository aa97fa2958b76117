"""One format for every line: tokensync's structlog lines and the libraries' stdlib ones."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from shared.logs import configure_logging, get_logger


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    configure_logging("info", "json")  # as tests/conftest.py leaves it
    structlog.contextvars.clear_contextvars()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_library_lines_are_json_with_their_logger_name_and_the_bound_context(
    out: io.StringIO,
) -> None:
    structlog.contextvars.bind_contextvars(region="eu")
    logging.getLogger("aiokafka.conn").warning("connection to %s lost", "node-1")
    try:
        raise ConnectionError("reset")
    except ConnectionError:
        logging.getLogger("faust.transport").exception("fetch failed")
    [lost, failed] = lines(out)
    assert lost["event"] == "connection to node-1 lost"
    assert (lost["logger"], lost["level"], lost["region"]) == ("aiokafka.conn", "warning", "eu")
    assert "timestamp" in lost
    assert failed["level"] == "error" and "ConnectionError: reset" in str(failed["exception"])


def test_library_chatter_below_warning_is_dropped_but_ours_is_kept_at_info(
    out: io.StringIO,
) -> None:
    for name in ("faust", "mode", "aiokafka", "kafka", "uvicorn.error"):
        logging.getLogger(name).info("chatter")
    get_logger("workers.app").info("batch_applied", records=3)
    get_logger("workers.app").debug("too_fine")
    [line] = lines(out)
    assert line == {**line, "event": "batch_applied", "module": "workers.app", "records": 3}
    assert "logger" not in line


def test_python_warnings_are_json_lines_too() -> None:
    code = (
        "from shared.logs import configure_logging; configure_logging('info', 'json'); "
        "import warnings; warnings.warn('old api', UserWarning, stacklevel=1)"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["logger"] == "py.warnings" and "old api" in str(line["event"])


def test_a_short_command_prints_only_its_result_on_stdout_and_no_info_line(
    tmp_path: Path,
) -> None:
    """``token issue --json`` logs ``token_issued`` in the store: not on stdout (scripts
    parse it), and not at info on stderr (only long-running commands log at info)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSYNC_")}
    env.update(
        TOKENSYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        TOKENSYNC_SIGNING_KEYS="k1:" + base64.b64encode(bytes(range(32))).decode(),
        TOKENSYNC_SIGNING_KEY_ID="k1",
    )
    args = ["token", "issue", "--type", "App\\Models\\User", "--id", "7", "--name", "ci"]
    done = subprocess.run(
        [sys.executable, "-m", "shared", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert json.loads(done.stdout)["id"] == 1
    assert "token_issued" not in done.stderr
