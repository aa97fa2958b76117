"""The seam between the relay and Kafka: the ``EventPublisher`` protocol and an in-memory one.

``KafkaPublisher`` (``producer.kafka_io``) is the real implementation;
``MemoryPublisher`` serves unit tests, as a stub broker does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import PublishError

__all__ = [
    "EventPublisher",
    "MemoryPublisher",
    "OutgoingRecord",
    "Placement",
    "RecordTooLargeError",
]


class RecordTooLargeError(PublishError):
    """The broker refused a record (or its batch) as larger than the topic allows."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A signed record ready for the topic; ``partition`` None lets the key decide."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the broker acknowledged a record."""

    partition: int
    offset: int


class EventPublisher(Protocol):
    """Publishes records to the token topic and reports where each one landed."""

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        """Send ``records`` in order; return their placements once all are acknowledged
        (acks=all), or raise PublishError (then none may be assumed published)."""
        ...

    def partitions(self) -> int:
        """How many partitions the token topic has."""
        ...

    def close(self) -> None:
        """Flush and release connections."""
        ...


@dataclass
class MemoryPublisher:
    """An in-memory topic: keyed partitioning by hash, offsets counted per partition."""

    partition_count: int = 3
    fail: bool = False
    log: list[tuple[int, int, OutgoingRecord]] = field(default_factory=list)

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        if self.fail:
            raise PublishError("memory publisher set to fail")
        placements = []
        for record in records:
            partition = (
                record.partition
                if record.partition is not None
                else sum(record.key) % self.partition_count
            )
            offset = sum(1 for p, _, _ in self.log if p == partition)
            self.log.append((partition, offset, record))
            placements.append(Placement(partition, offset))
        return placements

    def partitions(self) -> int:
        return self.partition_count

    def close(self) -> None:
        return None
