"""A broker's written config fits its heap: the log cleaner's dedupe buffer is allocated
at start-up, and Kafka's default (128 MiB) in a 256 MiB heap killed a broker on a loaded
machine with OutOfMemoryError in LogManager start-up."""

from __future__ import annotations

from pathlib import Path

from stack.kafka import KafkaBroker, KafkaJars


def _props(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _mebibytes(heap: str) -> int:
    assert heap.endswith("m")
    return int(heap[:-1])


def test_the_cleaner_buffer_is_a_small_part_of_the_smallest_heap(tmp_path: Path) -> None:
    broker = KafkaBroker(KafkaJars(tmp_path / "cache"), tmp_path / "kafka", 1, 2, "256m")
    props = _props(broker._write_config())
    buffer = int(props["log.cleaner.dedupe.buffer.size"])
    assert buffer * 8 <= _mebibytes(broker.heap) * 1024 * 1024


def test_a_restarted_node_is_not_ready_on_the_ready_line_its_previous_run_left_in_the_log(
    tmp_path: Path,
) -> None:
    """A restart appends to the same console log, which still holds the last run's ready
    line: readiness counts only what was written after the restart began (``since``)."""
    import socket
    import subprocess
    import sys

    import pytest

    from shared.errors import StackError
    from stack.process import ProcessRecord

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    broker = KafkaBroker(KafkaJars(tmp_path / "cache"), tmp_path / "kafka", port, 2, "256m")
    broker.data_dir.mkdir(parents=True)
    broker.log_file.write_text("[..] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n")
    since = broker.log_size()
    # the "new run": a live process of the recorded program, port open, log not yet ready
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    record = ProcessRecord("kafka", child.pid, port, (sys.executable,), str(broker.log_file))
    try:
        with pytest.raises(StackError, match="did not start"):
            broker.wait_ready(record, timeout_s=0.5, since=since)
        with broker.log_file.open("a") as log:
            log.write("[..] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n")
        broker.wait_ready(record, timeout_s=5, since=since)
    finally:
        child.kill()
        child.wait()
        listener.close()


def test_a_crashed_cluster_node_is_fenced_soon_enough_to_move_its_leaders_within_the_budget(
    tmp_path: Path,
) -> None:
    """Kafka's 9 s broker session made every region stale when a leader was SIGKILLed."""
    from shared.settings import Settings

    node = KafkaBroker(
        KafkaJars(tmp_path / "cache"), tmp_path / "n1", 1, 2, "256m", voters="1@127.0.0.1:2"
    )
    props = _props(node._write_config())
    settings = Settings()
    worst_s = (
        int(props["broker.session.timeout.ms"]) / 1000
        + int(props["broker.heartbeat.interval.ms"]) / 1000
        + settings.heartbeat_interval_s
        + 1.0  # the clients' metadata refresh and retry after the leaders moved
    )
    assert worst_s <= settings.staleness_budget_s
    alone = KafkaBroker(KafkaJars(tmp_path / "cache"), tmp_path / "n0", 1, 2, "256m")
    assert "broker.session.timeout.ms" not in _props(alone._write_config())
