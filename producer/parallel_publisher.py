"""The relay's publisher for large backlogs: the token topic's partitions produced from
several processes at once (``TOKENSYNC_RELAY_PRODUCERS``).

kafka-python builds every record in Python (~25 µs a record in ``send``), under the
relay's GIL. A publish of at least ``PARALLEL_FROM`` records is split by partition among
helper processes, each with its own ``KafkaPublisher`` (idempotent, acks=all): partition
``p`` always goes to helper ``p % helpers``, in the order given, so the order of a
partition's records holds, and a publish returns only once every helper reported all its
records acknowledged, so the next publish (perhaps through another producer) comes after
it. Smaller publishes (a few revocations, heartbeats) go through this process's own
producer: no hop between processes on the latency path. As with ``KafkaPublisher``, a
failed publish may have landed part of its records (the relay publishes them again);
the relay then closes this publisher, which stops its helpers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from producer.kafka_io import PLAINTEXT, KafkaPublisher
from producer.publisher import EventPublisher, OutgoingRecord, Placement, RecordTooLargeError
from shared.errors import PublishError
from shared.kafka_client import KafkaClientConfig
from shared.logs import get_logger

__all__ = ["PARALLEL_FROM", "ParallelPublisher", "open_publisher"]

log = get_logger(__name__)

#: Publishes with fewer records stay in this process (the hop costs about a millisecond).
PARALLEL_FROM = 1000
#: How long a helper may take to connect to Kafka before the publisher gives up.
START_TIMEOUT_S = 30.0

_Wire = tuple[bytes, bytes, list[tuple[str, bytes]], int | None]


def _serve(
    conn: multiprocessing.connection.Connection,
    bootstrap: str,
    topic: str,
    timeout_s: float,
    client: KafkaClientConfig,
) -> None:
    """A helper process: publish each list of records it is sent; None stops it."""
    try:
        publisher = KafkaPublisher(bootstrap, topic, timeout_s=timeout_s, client=client)
    except PublishError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ready", ""))
    try:
        while True:
            batch: list[_Wire] | None = conn.recv()
            if batch is None:
                break
            try:
                placed = publisher.publish([OutgoingRecord(k, v, h, p) for k, v, h, p in batch])
            except RecordTooLargeError as e:
                conn.send(("too_large", str(e)))
                break  # fatal to an idempotent producer: the relay drops this publisher
            except PublishError as e:
                conn.send(("error", str(e)))
                continue
            conn.send(("ok", [(p.partition, p.offset) for p in placed]))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the relay went away (or is stopping): nothing to report to
    finally:
        publisher.close()


class _Helper:
    """One helper process and its end of the pipe."""

    def __init__(self, process: BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn

    def receive(self, timeout_s: float) -> tuple[str, Any]:
        """The helper's next answer, or PublishError when it gives none in time."""
        try:
            if not self.conn.poll(timeout_s):
                raise PublishError(f"relay producer process {self.process.pid} did not answer")
            answer: tuple[str, Any] = self.conn.recv()
        except (EOFError, OSError) as e:
            raise PublishError(f"relay producer process {self.process.pid} is gone: {e}") from e
        return answer

    def stop(self) -> None:
        """Ask it to flush and stop; terminate it if it does not within a few seconds."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


class ParallelPublisher:
    """An ``EventPublisher`` whose large publishes are produced by ``helpers`` processes."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        helpers: int,
        timeout_s: float = 30.0,
        client: KafkaClientConfig = PLAINTEXT,
        parallel_from: int = PARALLEL_FROM,
    ) -> None:
        if helpers < 1:
            raise ValueError("a parallel publisher needs at least one helper process")
        self.topic = topic
        self._timeout_s = timeout_s
        self._parallel_from = parallel_from
        self._local = KafkaPublisher(bootstrap, topic, timeout_s=timeout_s, client=client)
        self._helpers: list[_Helper] = []
        context = multiprocessing.get_context("spawn")  # the relay may run in a thread
        try:
            for index in range(helpers):
                mine, theirs = context.Pipe()
                process = context.Process(
                    target=_serve,
                    args=(theirs, bootstrap, topic, timeout_s, client),
                    name=f"tokensync-relay-producer-{index}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._helpers.append(_Helper(process, mine))
            for helper in self._helpers:
                status, detail = helper.receive(START_TIMEOUT_S)
                if status != "ready":
                    raise PublishError(detail)
        except BaseException:
            self.close()
            raise
        log.info("relay_producers_started", helpers=helpers, parallel_from=parallel_from)

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        """Like ``KafkaPublisher.publish``; records of one partition go to one helper."""
        if len(records) < self._parallel_from or any(r.partition is None for r in records):
            return self._local.publish(records)
        count = len(self._helpers)
        batches: list[list[_Wire]] = [[] for _ in range(count)]
        origins: list[list[int]] = [[] for _ in range(count)]
        for index, r in enumerate(records):
            slot = (r.partition or 0) % count  # None is sent by this process (above)
            batches[slot].append((r.key, r.value, r.headers, r.partition))
            origins[slot].append(index)
        busy = [i for i in range(count) if batches[i]]
        for i in busy:
            try:
                self._helpers[i].conn.send(batches[i])
            except (OSError, ValueError) as e:
                raise PublishError(f"relay producer process is gone: {e}") from e
        placements: list[Placement | None] = [None] * len(records)
        failures: list[tuple[str, str]] = []
        for i in busy:  # every helper's answer is read, so none is left for the next call
            try:
                status, detail = self._helpers[i].receive(self._timeout_s + 10)
            except PublishError as e:
                failures.append(("error", str(e)))
                continue
            if status != "ok":
                failures.append((status, detail))
                continue
            for index, (partition, offset) in zip(origins[i], detail, strict=True):
                placements[index] = Placement(partition, offset)
        if failures:
            if any(status == "too_large" for status, _ in failures):
                raise RecordTooLargeError("; ".join(d for s, d in failures if s == "too_large"))
            raise PublishError("; ".join(detail for _, detail in failures))
        return [p for p in placements if p is not None]

    def partitions(self) -> int:
        """Partition count of the topic (this process's producer's metadata)."""
        return self._local.partitions()

    def close(self) -> None:
        """Stop the helpers (each flushes what it holds) and close this producer."""
        for helper in self._helpers:
            helper.stop()
        self._helpers = []
        self._local.close()


def open_publisher(
    bootstrap: str,
    topic: str,
    *,
    producers: int = 1,
    timeout_s: float = 30.0,
    client: KafkaClientConfig = PLAINTEXT,
) -> EventPublisher:
    """The relay's publisher: ``producers`` 1 is one ``KafkaPublisher`` in this process;
    more are that many helper processes for large publishes (``ParallelPublisher``)."""
    if producers <= 1:
        return KafkaPublisher(bootstrap, topic, timeout_s=timeout_s, client=client)
    return ParallelPublisher(
        bootstrap, topic, helpers=producers, timeout_s=timeout_s, client=client
    )
