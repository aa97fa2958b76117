"""Reading a topic back in tests (kafka-python), and running the relay in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition

from producer.kafka_io import KafkaAdmin, KafkaPublisher
from producer.publisher import EventPublisher
from producer.relay import Relay, RelayOptions
from producer.wakeup import waker_for
from shared.events import Event, Keyring, decode
from shared.kafka_client import KafkaClientConfig
from shared.keys import Topics

SIGNING_KEYS = {"test-1": b"0123456789abcdef0123456789abcdef"}
KEYRING = Keyring(SIGNING_KEYS, "test-1")


@dataclass(frozen=True)
class Consumed:
    """One record read back: where it was and what it decoded to."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def event(self, keyring: Keyring = KEYRING) -> Event:
        return decode(self.key, self.value, self.headers, keyring)


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int = 0,
    timeout_s: float = 30,
    client: KafkaClientConfig | None = None,
) -> list[Consumed]:
    """Every record of ``topic`` from the beginning, waiting until at least ``expect``
    (``client``: security settings of a cluster that requires them)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        **(client or KafkaClientConfig()).kafka_python_kwargs(),
    )
    deadline = time.monotonic() + timeout_s
    try:
        # A topic a relay creates this very moment may not be in the metadata yet.
        partitions = consumer.partitions_for_topic(topic) or set()
        while not partitions and expect and time.monotonic() < deadline:
            time.sleep(0.1)
            consumer.topics()  # refreshes the metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return []  # the topic does not exist (yet): nothing to read
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        found: list[Consumed] = []
        ends = consumer.end_offsets(tps)
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                found.extend(
                    Consumed(r.partition, r.offset, r.key, r.value, list(r.headers or []))
                    for r in records
                )
            done = all(consumer.position(tp) >= ends[tp] for tp in tps)
            if done and len(found) >= expect:
                break
            if done:
                ends = consumer.end_offsets(tps)
        return found
    finally:
        consumer.close()


def kafka_connector(
    bootstrap: str, topics: Topics, partitions: int = 3
) -> Callable[[], EventPublisher]:
    def connect() -> EventPublisher:
        admin = KafkaAdmin(bootstrap)
        try:
            admin.ensure_topics(topics, partitions)
        finally:
            admin.close()
        return KafkaPublisher(bootstrap, topics.tokens, timeout_s=10)

    return connect


@contextmanager
def running_relay(
    engine: sa.Engine,
    connect: Callable[[], EventPublisher],
    keyring: Keyring = KEYRING,
    options: RelayOptions | None = None,
) -> Iterator[Relay]:
    """A relay loop in a background thread for the duration of the block."""
    waker = waker_for(engine)
    relay = Relay(engine, connect, keyring, waker, options=options or RelayOptions())
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=30)
        waker.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
