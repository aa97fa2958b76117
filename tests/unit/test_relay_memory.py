"""The relay's logic against a real SQLite store and the in-memory topic
(``producer.publisher.MemoryPublisher``): order, signatures, marking, nothing lost
through broker failures, refused records sent as denials, certified heartbeats."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from producer.publisher import MemoryPublisher
from producer.relay import Relay, RelayOptions, partition_for
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.errors import PublishError
from shared.events import EpochEvent, Event, Heartbeat, Keyring, TokenEvent, TokenOp, decode
from shared.tokenformat import hash_token

USER = "App\\Models\\User"
KEYRING = Keyring({"unit-1": b"u" * 32}, "unit-1")


class NoWaker:
    """The relay's outbox waker, never woken (the tests drive the relay by hand)."""

    def wait(self, timeout_s: float) -> bool:
        time.sleep(min(timeout_s, 0.01))
        return False

    def close(self) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield TokenStore(engine)
    engine.dispose()


@pytest.fixture
def topic() -> MemoryPublisher:
    return MemoryPublisher(partition_count=3)


def relay_of(store: TokenStore, topic: MemoryPublisher, batch_size: int = 5000) -> Relay:
    options = RelayOptions(batch_size=batch_size, backoff_initial_s=0.01, backoff_max_s=0.02)
    return Relay(store.engine, lambda: topic, KEYRING, NoWaker(), options=options)


def events(topic: MemoryPublisher, partition: int | None = None) -> list[Event]:
    """What landed, each record verified against the keyring and decoded."""
    return [decode(r.key, r.value, r.headers, KEYRING) for r in topic.records(partition)]


def unpublished(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        query = "SELECT count(*) FROM tokensync_outbox WHERE published_at_ms IS NULL"
        return int(conn.execute(sa.text(query)).scalar_one())


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_each_outbox_row_goes_out_once_signed_keyed_and_in_seq_order(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    first = store.issue(USER, 1, "first", ["orders:read"])
    second = store.issue(USER, 2, "second")
    revoked = store.revoke_token(first.id)
    epoch = store.revoke_ability("orders:read")
    relay = relay_of(store, topic)

    assert 4 == relay.publish_batch()
    assert 0 == relay.publish_batch(), "marked published: nothing goes out twice"
    assert 0 == unpublished(store)
    landed = events(topic)
    assert [first.seq, second.seq, revoked.seq, epoch.seq] == sorted(e.seq for e in landed)
    tokens = [e for e in landed if isinstance(e, TokenEvent)]
    assert [TokenOp.ISSUED, TokenOp.ISSUED, TokenOp.REVOKED] == sorted(
        (e.op for e in tokens), key=[TokenOp.ISSUED, TokenOp.REVOKED].index
    )
    assert {hash_token(first.plain_text_token.split("|", 1)[1])} == {
        e.token_hash for e in tokens if e.token_id == first.id
    }
    for partition in range(3):  # one token's records keep their order in its partition
        seqs = [e.seq for e in events(topic, partition) if not isinstance(e, Heartbeat)]
        assert seqs == sorted(seqs)
    for record in topic.records():
        assert partition_for(record.key, 3) == record.partition
    assert any(isinstance(e, EpochEvent) and e.scope == "ability:orders:read" for e in landed)
    serialized = b"".join(r.key + r.value for r in topic.records())
    assert first.plain_text_token.split("|", 1)[1].encode() not in serialized


def test_a_broker_that_is_down_leaves_every_row_unpublished_until_it_is_back(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    for n in range(5):
        store.issue(USER, n, f"t{n}")
    relay = relay_of(store, topic)
    topic.fail = True
    with pytest.raises(PublishError):
        relay.publish_batch()
    assert 5 == unpublished(store) and [] == topic.log
    topic.fail = False
    assert 5 == relay.publish_batch()
    assert 0 == unpublished(store) and 5 == len(topic.log)


def test_a_batch_cut_off_midway_is_published_again_whole_never_lost(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    seqs = [store.issue(USER, n, f"t{n}").seq for n in range(6)]
    relay = relay_of(store, topic)
    topic.fail_next, topic.land_before_failure = 1, 4
    with pytest.raises(PublishError):
        relay.publish_batch()
    assert 6 == unpublished(store), "nothing is marked before the whole batch is acknowledged"
    assert 6 == relay.publish_batch()
    landed = [e.seq for e in events(topic) if isinstance(e, TokenEvent)]
    assert set(seqs) == set(landed) and 10 == len(landed), "4 duplicates, no gap"


def test_the_run_loop_retries_through_failures_until_everything_is_out(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    seqs = {store.issue(USER, n, f"t{n}").seq for n in range(20)}
    relay = relay_of(store, topic, batch_size=7)
    topic.fail_next = 3
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: 0 == unpublished(store), 20, "every row published")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert seqs == {e.seq for e in events(topic) if isinstance(e, TokenEvent)}
    assert topic.closed >= 3, "a failed publisher is dropped and connected again"


def test_a_record_the_broker_refuses_as_too_large_goes_out_as_a_denial_of_its_token(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    small = store.issue(USER, 1, "small")
    large = store.issue(USER, 2, "x" * 200, ["a" * 100, "b" * 100, "c" * 100])
    relay = relay_of(store, topic)
    topic.max_record_bytes = 600
    assert 2 == relay.publish_batch()
    assert 0 == unpublished(store)
    by_id = {e.token_id: e for e in events(topic) if isinstance(e, TokenEvent)}
    assert TokenOp.ISSUED == by_id[small.id].op
    denial = by_id[large.id]
    assert (TokenOp.REVOKED, large.seq, (), "") == (
        denial.op,
        denial.seq,
        denial.abilities,
        denial.name,
    )


def test_heartbeats_go_into_every_partition_and_certify_no_later_than_the_backlog(
    store: TokenStore, topic: MemoryPublisher
) -> None:
    relay = relay_of(store, topic)
    waiting = store.issue(USER, 1, "waiting")
    with store.engine.connect() as conn:
        recorded = conn.execute(
            sa.text("SELECT recorded_at_ms FROM tokensync_outbox WHERE seq = :s"),
            {"s": waiting.seq},
        ).scalar_one()
    relay.heartbeat()
    beats = [e for e in events(topic) if isinstance(e, Heartbeat)]
    assert [0, 1, 2] == sorted(b.partition for b in beats)
    assert all(b.at_ms <= int(recorded) for b in beats), "the backlog holds certification back"
    for partition in range(3):
        assert [partition] == [
            e.partition for e in events(topic, partition) if isinstance(e, Heartbeat)
        ]
    relay.publish_batch()
    before = int(time.time() * 1000)
    relay.heartbeat()
    latest = [e for e in events(topic) if isinstance(e, Heartbeat)][-3:]
    assert all(b.at_ms >= before - 5_000 and b.seq == waiting.seq for b in latest)
