"""Two relays on one SQLite store and the in-memory topic, with a fake store clock for
their leases: only the holder publishes, every record carries its fencing epoch, and a
relay that lost the lease marks nothing and becomes a standby."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from producer.publisher import MemoryPublisher, OutgoingRecord, Placement
from producer.relay import Relay, RelayOptions
from producer.relay_lease import LeaseLostError, RelayLease
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.events import FENCE_HEADER, Heartbeat, Keyring, TokenEvent, TokenOp, decode

USER = "App\\Models\\User"
KEYRING = Keyring({"unit-1": b"u" * 32}, "unit-1")


class NoWaker:
    def wait(self, timeout_s: float) -> bool:
        return False

    def close(self) -> None:
        return None


class FakeClock:
    """The store's clock for the leases, moved by hand."""

    def __init__(self) -> None:
        self.ms = 0  # below every epoch: take-overs count 1, 2, 3

    def __call__(self, conn: sa.Connection) -> int:
        return self.ms


@dataclass
class HookedTopic(MemoryPublisher):
    """An in-memory topic that runs its ``hooks`` inside the next publish call (as if the
    relay were paused there while another relay took over)."""

    hooks: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, records: Sequence[OutgoingRecord]) -> list[Placement]:
        while self.hooks:
            self.hooks.pop(0)()
        return super().publish(records)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield TokenStore(engine)
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def relay(store: TokenStore, topic: MemoryPublisher, clock: FakeClock, holder: str) -> Relay:
    lease = RelayLease(store.engine, holder, ttl_ms=3000, now_ms=clock)
    options = RelayOptions(backoff_initial_s=0.01, backoff_max_s=0.02)
    # The store's fake clock is also the relay's monotonic clock: a relay "paused ten
    # seconds" has both moved on, as SIGSTOP moves time.monotonic, and its renewal (trusted
    # for a third of the TTL before it asks the store again) is old by then.
    return Relay(
        store.engine,
        lambda: topic,
        KEYRING,
        NoWaker(),
        options=options,
        lease=lease,
        monotonic=lambda: clock.ms / 1000,
    )


def fences(topic: MemoryPublisher) -> list[int | None]:
    out: list[int | None] = []
    for record in topic.records():
        values = [int(v) for k, v in record.headers if k == FENCE_HEADER]
        out.append(values[0] if values else None)
    return out


def issue(store: TokenStore, n: int) -> None:
    for i in range(n):
        store.issue(USER, str(i), f"t{i}")


def test_of_two_relays_on_one_store_only_the_lease_holder_publishes(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = MemoryPublisher(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    with capture_logs() as logs:
        assert a.lease_step()
        assert not b.lease_step()
    assert ["relay_active", "relay_standby"] == [
        e["event"] for e in logs if e["event"].startswith("relay_")
    ]
    assert [1] == [e["epoch"] for e in logs if e["event"] == "relay_active"]
    heartbeats = len(topic.records())
    assert 3 == heartbeats  # the new holder beats every partition at once
    issue(store, 4)
    with pytest.raises(LeaseLostError):
        b.publish_batch()
    assert 4 == a.publish_batch()
    assert [1] * 7 == fences(topic)
    assert 0 == a.backlog()


def test_a_standby_takes_over_after_the_ttl_and_stamps_the_next_epoch(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = MemoryPublisher(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    assert a.lease_step()
    clock.ms += 3000  # a died: no renewal
    issue(store, 2)
    assert b.lease_step()
    assert 2 == b.publish_batch()
    assert [1, 1, 1, *[3000] * 5] == fences(topic)  # the next epoch: the store clock
    beats = [decode(r.key, r.value, r.headers, KEYRING) for r in topic.records()[3:6]]
    assert all(isinstance(beat, Heartbeat) for beat in beats)


def test_a_relay_that_lost_the_lease_produces_nothing_and_becomes_a_standby(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = MemoryPublisher(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    assert a.lease_step()
    clock.ms += 10_000  # a was paused (SIGSTOP) ten seconds
    assert b.lease_step()
    issue(store, 3)
    landed = len(topic.records())
    with pytest.raises(LeaseLostError):
        a.publish_batch()  # resumed: it re-checks the lease before producing
    with pytest.raises(LeaseLostError):
        a.heartbeat()
    assert landed == len(topic.records())
    assert not a.lease_step()
    assert not a.active
    assert 3 == b.publish_batch()


def test_rows_published_by_a_relay_that_lost_the_lease_before_marking_stay_for_the_holder(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = HookedTopic(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    assert a.lease_step()
    issue(store, 3)

    def take_over() -> None:  # a pauses after its lease check, b takes over meanwhile
        clock.ms += 10_000
        assert b.lease_step()

    topic.hooks = [take_over]
    with pytest.raises(LeaseLostError):
        a.publish_batch()  # its records landed (epoch 1) but it may not mark them
    assert 3 == a.backlog()
    assert 3 == b.publish_batch()
    assert 0 == b.backlog()
    assert [1, 1, 1, *[10_000] * 3, 1, 1, 1, *[10_000] * 3] == fences(topic)


def test_a_relay_without_a_lease_stamps_no_fencing_epoch(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = MemoryPublisher(partition_count=3)
    plain = Relay(store.engine, lambda: topic, KEYRING, NoWaker())
    issue(store, 2)
    assert plain.lease_step()
    assert 2 == plain.publish_batch()
    plain.heartbeat()
    assert [None] * 5 == fences(topic)


def test_a_relay_that_stops_cleanly_hands_the_lease_to_a_standby_at_once(
    store: TokenStore, clock: FakeClock
) -> None:
    topic = MemoryPublisher(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    stop = threading.Event()
    runner = threading.Thread(target=a.run, args=(stop,))
    runner.start()
    try:
        deadline = 200
        while not a.active and deadline:
            stop.wait(0.05)
            deadline -= 1
        assert a.active
    finally:
        stop.set()
        runner.join(timeout=10)
    assert b.lease_step()  # no TTL to wait for: the clock has not moved
    assert 2 == RelayLease(store.engine, "x", now_ms=clock).view().epoch


def test_a_late_record_of_a_stale_relay_never_stays_the_newest_of_its_key(
    store: TokenStore, clock: FakeClock
) -> None:
    """Compaction keeps a key's last record: had the stale relay's older version stayed
    last, a region built later from the compacted topic would take a revoked token as
    live. The stale relay, refused at marking, has the newest row of each key it sent
    published once more, after its own late records."""
    topic = HookedTopic(partition_count=3)
    a, b = relay(store, topic, clock, "a"), relay(store, topic, clock, "b")
    assert a.lease_step()
    issued = store.issue(USER, "1", "late")

    def take_over_and_revoke() -> None:  # a pauses with the issue in flight
        clock.ms += 10_000
        assert b.lease_step()
        store.revoke_token(issued.id)
        assert 2 == b.publish_batch()

    topic.hooks = [take_over_and_revoke]
    with pytest.raises(LeaseLostError):
        a.publish_batch()  # its issue record lands after b's revocation
    assert 1 == b.publish_batch()  # the revocation, once more
    last: dict[bytes, TokenEvent] = {}
    for record in topic.records():
        event = decode(record.key, record.value, record.headers, KEYRING)
        if isinstance(event, TokenEvent):
            last[record.key] = event
    assert TokenOp.REVOKED == last[issued.token_hash.encode()].op
    assert 0 == b.backlog()


@pytest.mark.skipif(not hasattr(__import__("time"), "CLOCK_BOOTTIME"), reason="Linux only")
def test_the_cached_lease_confirmation_ages_on_a_clock_that_counts_a_suspended_host() -> None:
    """``time.monotonic`` stops while the host is suspended (a paused VM): a relay resumed
    after longer than the lease's TTL would trust its last renewal for a third of the TTL
    after another relay took over. CLOCK_BOOTTIME keeps counting."""
    import time

    from producer.relay_failover import Failover

    failover = Failover(None, time.time, 1.0)
    clock = failover._monotonic
    assert clock is not time.monotonic
    assert abs(clock() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 0.5


def test_a_relay_built_without_a_clock_ages_its_lease_confirmation_on_the_boot_clock(
    tmp_path: Path,
) -> None:
    """The relay passed ``time.monotonic`` to its failover explicitly, so the failover's
    boot-clock default never reached a deployed relay."""
    from producer.relay_failover import since_boot

    engine = create_engine(f"sqlite:///{tmp_path / 'clock.db'}")
    relay = Relay(engine, lambda: MemoryPublisher(partition_count=1), KEYRING, NoWaker())
    try:
        assert relay._failover._monotonic is since_boot
    finally:
        relay.close()
        engine.dispose()
