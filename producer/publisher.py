"""The seam between the relay and Kafka: the ``EventPublisher`` protocol and an in-memory one.

``KafkaPublisher`` (``producer.kafka_io``) is the real implementation;
``MemoryPublisher`` is the unit tier's in-memory topic, as dramatiq's stub broker is
its users' (``tests/unit/test_relay_memory.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import PublishError
from shared.seal import SealSigner, record_digest

__all__ = [
    "EventPublisher",
    "MemoryPublisher",
    "OutgoingRecord",
    "Placement",
    "RecordTooLargeError",
    "SealingPublisher",
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
    """An in-memory topic, the relay's stub broker in the unit tier.

    Records land in ``log`` as ``(partition, offset, record)`` with offsets counted per
    partition; a record without a partition goes where its key's CRC-32 sends it (as
    ``producer.relay.partition_for`` does). Faults are set by hand: ``fail`` refuses
    every publish (a broker that is down), ``fail_next`` refuses the next calls, after
    ``land_before_failure`` of their records have landed (a broker that stored part of a
    batch before the connection broke: the relay must publish them again), and
    ``max_record_bytes`` refuses a call holding a larger record (the broker's
    ``RecordTooLargeError``).
    """

    partition_count: int = 3
    fail: bool = False
    fail_next: int = 0
    land_before_failure: int = 0
    max_record_bytes: int | None = None
    log: list[tuple[int, int, OutgoingRecord]] = field(default_factory=list)
    calls: int = 0
    closed: int = 0

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        self.calls += 1
        if self.fail:
            raise PublishError("memory publisher set to fail")
        limit = self.max_record_bytes
        if limit is not None and any(len(r.key) + len(r.value) > limit for r in records):
            raise RecordTooLargeError(f"a record is larger than {limit} bytes")
        failing = self.fail_next > 0
        if failing:
            self.fail_next -= 1
            records = records[: self.land_before_failure]
        placements = [self._append(record) for record in records]
        if failing:
            raise PublishError("memory publisher set to fail this call")
        return placements

    def _append(self, record: OutgoingRecord) -> Placement:
        partition = (
            record.partition
            if record.partition is not None
            else zlib.crc32(record.key) % self.partition_count
        )
        if not 0 <= partition < self.partition_count:
            raise PublishError(f"no partition {partition} (the topic has {self.partition_count})")
        offset = sum(1 for p, _, _ in self.log if p == partition)
        self.log.append((partition, offset, record))
        return Placement(partition, offset)

    def records(self, partition: int | None = None) -> list[OutgoingRecord]:
        """What landed, in order (of one partition, or of all in landing order)."""
        return [r for p, _, r in self.log if partition is None or p == partition]

    def partitions(self) -> int:
        return self.partition_count

    def close(self) -> None:
        self.closed += 1


class SealingPublisher:
    """Seals what another publisher sends: after the records of each partition of one
    ``publish`` it appends their seals (``shared.seal``), in the same produce call, so a
    batch and its seal land together; the placements returned are the records' own."""

    def __init__(self, inner: EventPublisher, topic: str, signer: SealSigner) -> None:
        self._inner = inner
        self._topic = topic
        self._signer = signer

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        by_partition: dict[int, list[int]] = {}
        count = self._inner.partitions() if any(r.partition is None for r in records) else 0
        for index, record in enumerate(records):
            partition = record.partition
            if partition is None:
                partition = zlib.crc32(record.key) % count
            by_partition.setdefault(partition, []).append(index)
        outgoing: list[OutgoingRecord] = []
        origin: list[int] = []  # index into ``records`` of each outgoing one, -1: a seal
        for partition, indexes in by_partition.items():
            covered = []
            for index in indexes:
                r = records[index]
                placed = OutgoingRecord(r.key, r.value, r.headers, partition)
                outgoing.append(placed)
                origin.append(index)
                covered.append((r.key, record_digest(r.key, r.value, r.headers)))
            for key, value, headers in self._signer.seals(self._topic, partition, covered):
                outgoing.append(OutgoingRecord(key, value, headers, partition))
                origin.append(-1)
        placements = self._inner.publish(outgoing)
        mine: list[Placement | None] = [None] * len(records)
        for index, placement in zip(origin, placements, strict=True):
            if index >= 0:
                mine[index] = placement
        return [p for p in mine if p is not None]

    def partitions(self) -> int:
        return self._inner.partitions()

    def close(self) -> None:
        self._inner.close()
