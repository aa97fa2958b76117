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
