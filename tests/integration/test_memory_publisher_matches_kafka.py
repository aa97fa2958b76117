"""The unit tier's ``MemoryPublisher`` places records as ``KafkaPublisher`` does on a real
broker (partitions, offsets per partition, order) and refuses what the broker refuses."""

from __future__ import annotations

import pytest

from producer.kafka_io import KafkaAdmin, KafkaPublisher
from producer.publisher import MemoryPublisher, OutgoingRecord, Placement, RecordTooLargeError
from shared.keys import Topics

pytestmark = pytest.mark.integration


def _batches() -> list[list[OutgoingRecord]]:
    def record(n: int, partition: int) -> OutgoingRecord:
        return OutgoingRecord(f"k{n}".encode(), b"v" * n, [("n", str(n).encode())], partition)

    return [
        [record(n, n % 3) for n in range(7)],
        [record(10 + n, 2) for n in range(3)],
        [record(20, 0)],
    ]


def test_the_memory_publisher_places_records_as_the_broker_does(
    kafka_bootstrap: str, topics: Topics
) -> None:
    admin = KafkaAdmin(kafka_bootstrap)
    try:
        admin.ensure_topics(topics, 3)
    finally:
        admin.close()
    kafka = KafkaPublisher(kafka_bootstrap, topics.tokens)
    memory = MemoryPublisher(partition_count=3, max_record_bytes=1024 * 1024)
    try:
        assert memory.partitions() == kafka.partitions()
        placed: dict[str, list[list[Placement]]] = {"kafka": [], "memory": []}
        for batch in _batches():
            placed["kafka"].append(kafka.publish(batch))
            placed["memory"].append(memory.publish(batch))
        assert placed["memory"] == placed["kafka"]
        huge = [OutgoingRecord(b"huge", b"x" * (1024 * 1024 + 1), [], 0)]
        with pytest.raises(RecordTooLargeError):
            memory.publish(huge)
        with pytest.raises(RecordTooLargeError):
            kafka.publish(huge)
    finally:
        kafka.close()
