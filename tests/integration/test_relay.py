"""The relay on a real broker: order, signatures, heartbeats, no plaintext, no gaps."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.outbox import unpublished_count
from producer.relay import RelayOptions
from producer.store import TokenStore
from shared.events import EpochEvent, Heartbeat, TokenEvent, TokenOp, principal_scope
from shared.keys import Topics
from tests.kafka_helpers import kafka_connector, read_topic, running_relay, wait_for
from tests.servers import DedicatedKafka

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def backlog(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return unpublished_count(conn)


def test_every_mutation_reaches_kafka_signed_in_seq_order_without_plaintext(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    plains = []
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics)):
        issued = [store.issue(USER, i % 3, f"t{i}", ["read"]) for i in range(30)]
        plains = [t.plain_text_token.split("|", 1)[1] for t in issued]
        store.revoke_token(issued[0].id)
        store.revoke_principal(USER, 1)
        with store.engine.begin() as conn:  # Laravel's way: plain SQL on the same table
            conn.execute(
                sa.text(
                    "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name,"
                    " token, abilities, created_at, updated_at) VALUES (:t, 99, 'laravel', :h,"
                    " '[\"*\"]', :n, :n)"
                ),
                {"t": USER, "h": "b" * 64, "n": utcnow()},
            )
            conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE tokenable_id = 99"))
        wait_for(lambda: backlog(store) == 0, what="outbox drained")
        with store.engine.connect() as conn:
            expected_seqs = list(
                conn.execute(sa.text("SELECT seq FROM tokensync_outbox ORDER BY seq")).scalars()
            )

    records = read_topic(kafka_bootstrap, topics.tokens, expect=len(expected_seqs))
    events = [r.event() for r in records]  # raises if any signature fails
    data = [e for e in events if not isinstance(e, Heartbeat)]
    assert expected_seqs == sorted({e.seq for e in data})
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record, event in zip(records, events, strict=True):
        if not isinstance(event, Heartbeat):
            by_partition[record.partition].append(event.seq)
    assert all(seqs == sorted(seqs) for seqs in by_partition.values())
    assert any(isinstance(e, EpochEvent) and e.scope == principal_scope(USER, 1) for e in data)
    laravel = [e for e in data if isinstance(e, TokenEvent) and e.token_hash == "b" * 64]
    assert [TokenOp.ISSUED, TokenOp.REVOKED] == [e.op for e in laravel]
    blob = b"".join((r.value or b"") + (r.key or b"") for r in records)
    assert [] == [p for p in plains if p.encode() in blob]


def test_positions_of_published_rows_match_the_topic(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics)):
        issued = store.issue(USER, 1, "where")
        wait_for(lambda: store.position(issued.seq).offset is not None, what="published")
    position = store.position(issued.seq)
    records = read_topic(kafka_bootstrap, topics.tokens, expect=1)
    [match] = [
        r for r in records if (r.partition, r.offset) == (position.partition, position.offset)
    ]
    event = match.event()
    assert isinstance(event, TokenEvent) and issued.seq == event.seq


def test_an_idle_relay_sends_heartbeats_into_every_partition(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    options = RelayOptions(heartbeat_interval_s=0.2)
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics, 3), options=options):
        wait_for(
            lambda: (
                len({r.partition for r in read_topic(kafka_bootstrap, topics.tokens, timeout_s=2)})
                == 3
            ),
            what="heartbeats in 3 partitions",
        )
        first = len(read_topic(kafka_bootstrap, topics.tokens, timeout_s=2))
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, topics.tokens, timeout_s=2)) >= first + 6,
            what="more heartbeats",
        )
    beats = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens)]
    assert all(isinstance(b, Heartbeat) for b in beats)
    assert {0, 1, 2} == {b.partition for b in beats if isinstance(b, Heartbeat)}


def test_a_crash_between_publishing_and_marking_replays_duplicates_never_gaps(
    store: TokenStore, kafka_bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    import producer.relay as relay_module

    real_mark = relay_module.mark_published
    crashes = {"left": 2}

    def crashing_mark(conn: sa.Connection, published: list[object]) -> None:
        if crashes["left"] > 0:
            crashes["left"] -= 1
            raise sa.exc.OperationalError("UPDATE", {}, Exception("simulated crash before marking"))
        real_mark(conn, published)  # type: ignore[arg-type]

    monkeypatch.setattr(relay_module, "mark_published", crashing_mark)
    seqs = [store.issue(USER, 1, f"t{i}").seq for i in range(50)]
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics)):
        wait_for(lambda: backlog(store) == 0, what="outbox drained")
    events = [r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=len(seqs))]
    published = [e.seq for e in events if isinstance(e, TokenEvent)]
    assert set(seqs) == set(published)
    assert len(published) > len(seqs), "the crashed rounds were published again (duplicates)"
    assert 0 == crashes["left"]


def test_expiry_and_times_travel_in_milliseconds(
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    expires = utcnow() + dt.timedelta(hours=1)
    with running_relay(store.engine, kafka_connector(kafka_bootstrap, topics)):
        issued = store.issue(USER, 1, "expiring", expires_at=expires)
        wait_for(lambda: backlog(store) == 0, what="outbox drained")
    [event] = [
        e
        for e in (r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=1))
        if isinstance(e, TokenEvent)
    ]
    assert int(expires.replace(tzinfo=dt.UTC).timestamp() * 1000) == event.expires_at_ms
    assert issued.token_hash == event.token_hash
    assert event.issued_at_ms >= event.created_at_ms


def test_a_broker_outage_during_1000_revocations_loses_and_reorders_nothing(
    store: TokenStore, dedicated_kafka: DedicatedKafka, topics: Topics
) -> None:
    issued = [store.issue(USER, i, f"t{i}") for i in range(1000)]
    options = RelayOptions(backoff_max_s=0.5)
    with running_relay(
        store.engine, kafka_connector(dedicated_kafka.bootstrap, topics), options=options
    ):
        wait_for(lambda: backlog(store) == 0, timeout_s=60, what="issues published")
        revoked_seqs = [store.revoke_token(t.id).seq for t in issued[:300]]
        dedicated_kafka.stop()
        revoked_seqs += [store.revoke_token(t.id).seq for t in issued[300:]]
        assert backlog(store) > 0, "with the broker down the outbox grows"
        dedicated_kafka.start()
        wait_for(lambda: backlog(store) == 0, timeout_s=120, what="outbox drained after outage")

    records = read_topic(dedicated_kafka.bootstrap, topics.tokens, expect=2000)
    revocations: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for record in records:
        event = record.event()
        if isinstance(event, TokenEvent):
            revocations[event.token_hash].append((record.offset, event.seq, record.partition))
    assert set(revoked_seqs) <= {seq for entries in revocations.values() for _, seq, _ in entries}
    for entries in revocations.values():
        # per key, later offsets never carry an older version: issued before revoked
        seqs_in_offset_order = [seq for _, seq, _ in sorted(entries)]
        assert sorted(seqs_in_offset_order) == seqs_in_offset_order
