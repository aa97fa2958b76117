"""The relay's publisher with several producer processes (``TOKENSYNC_RELAY_PRODUCERS``):
a large batch is produced by helper processes, one per group of partitions, and still
lands in order, once, with the placements the relay marks."""

from __future__ import annotations

from collections import defaultdict

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.kafka_io import KafkaAdmin
from producer.outbox import unpublished_count
from producer.parallel_publisher import ParallelPublisher
from producer.publisher import EventPublisher, OutgoingRecord
from producer.store import TokenStore
from producer.tokens import hash_token
from shared.events import Heartbeat, TokenEvent, TokenOp
from shared.keys import Topics
from tests.kafka_helpers import read_topic, running_relay, wait_for

pytestmark = pytest.mark.integration

USER = "App\\Models\\User"


def _topic(bootstrap: str, topics: Topics, partitions: int = 3) -> None:
    admin = KafkaAdmin(bootstrap)
    try:
        admin.ensure_topics(topics, partitions)
    finally:
        admin.close()


def test_a_large_publish_through_two_producer_processes_lands_in_partition_order_where_it_says(
    kafka_bootstrap: str, topics: Topics
) -> None:
    _topic(kafka_bootstrap, topics)
    publisher = ParallelPublisher(kafka_bootstrap, topics.tokens, helpers=2, timeout_s=10)
    try:
        large = [
            OutgoingRecord(f"k{n % 50}".encode(), f"{n}".encode(), [("h", b"x")], n % 3)
            for n in range(3000)
        ]
        placed = publisher.publish(large)
        small = [OutgoingRecord(b"k1", b"after", [], 1)]  # this process's own producer
        placed_small = publisher.publish(small)
    finally:
        publisher.close()
    records = read_topic(kafka_bootstrap, topics.tokens, expect=3001)
    at = {(r.partition, r.offset): r for r in records}
    assert len(records) == 3001
    for record, place in zip(large + small, placed + placed_small, strict=True):
        landed = at[(place.partition, place.offset)]
        assert (landed.key, landed.value, landed.headers) == (
            record.key,
            record.value,
            record.headers,
        )
        assert place.partition == record.partition
    by_partition: dict[int, list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[r.partition].append(r.value or b"")
    for partition in range(3):
        sent = [r.value for r in large + small if r.partition == partition]
        assert by_partition[partition] == sent


def test_a_relay_with_two_producer_processes_publishes_a_bulk_revocation_once_in_seq_order(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    now = utcnow()
    rows = [
        {"t": USER, "i": i % 40, "h": hash_token(f"parallel-{i}"), "n": now} for i in range(2500)
    ]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, :i, 'bulk', :h, '[\"*\"]', :n, :n)"
            ),
            rows,
        )
        conn.execute(sa.text("DELETE FROM personal_access_tokens"))

    def connect() -> EventPublisher:
        _topic(kafka_bootstrap, topics)
        return ParallelPublisher(kafka_bootstrap, topics.tokens, helpers=2, timeout_s=10)

    def backlog() -> int:
        with store.engine.connect() as conn:
            return unpublished_count(conn)

    with running_relay(store.engine, connect):
        wait_for(lambda: backlog() == 0, 60, "outbox drained")
    records = read_topic(kafka_bootstrap, topics.tokens, expect=5000)
    events = [(r, r.event()) for r in records]  # every signature verifies
    data = [(r, e) for r, e in events if isinstance(e, TokenEvent)]
    assert sorted(e.seq for _, e in data) == list(range(1, 5001))  # each row once
    ops: dict[str, list[TokenOp]] = defaultdict(list)
    for _, event in sorted(data, key=lambda item: (item[0].partition, item[0].offset)):
        ops[event.token_hash].append(event.op)
    assert set(map(tuple, ops.values())) == {(TokenOp.ISSUED, TokenOp.REVOKED)}
    with store.engine.connect() as conn:
        marked = {
            int(seq): (int(partition), int(offset))
            for seq, partition, offset in conn.execute(
                sa.text("SELECT seq, kafka_partition, kafka_offset FROM tokensync_outbox")
            )
        }
    assert all(marked[e.seq] == (r.partition, r.offset) for r, e in data)
    assert any(isinstance(e, Heartbeat) for _, e in events)
