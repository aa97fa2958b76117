"""The relay lease (``producer.relay_lease``) on a real SQLite store with a fake store
clock: one holder at a time, take-over only after expiry, an epoch bumped on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from producer.relay_lease import RelayLease
from producer.schema import create_engine, migrate


class FakeClock:
    """The store's clock, moved by hand."""

    def __init__(self) -> None:
        self.ms = 0  # below every epoch: take-overs count 1, 2, 3 (the clock floor: see below)

    def __call__(self, conn: sa.Connection) -> int:
        return self.ms


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def lease(engine: sa.Engine, clock: FakeClock, holder: str) -> RelayLease:
    return RelayLease(engine, holder, ttl_ms=3000, now_ms=clock)


def test_the_first_relay_takes_the_free_lease_at_epoch_one_and_the_second_stays_standby(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    assert 1 == a.acquire()
    assert b.acquire() is None
    assert (True, False) == (a.held, b.held)
    view = b.view()
    assert ("a", 1, clock.ms + 3000) == (view.holder, view.epoch, view.expires_at_ms)


def test_a_standby_takes_over_only_once_the_lease_expired_by_the_store_clock(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    a.acquire()
    clock.ms += 2999
    assert b.acquire() is None
    clock.ms += 1
    assert 3000 == b.acquire()  # the store's clock is above 1 + 1
    assert not a.check()
    assert not a.held
    assert a.acquire() is None  # the old holder is a standby now


def test_renewals_keep_a_standby_out_for_as_long_as_they_come(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    a.acquire()
    for _ in range(10):
        clock.ms += 1000
        assert 1 == a.acquire()
        assert b.acquire() is None
    assert a.check()


def test_a_relay_that_lost_the_lease_cannot_renew_it_inside_a_transaction(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    a.acquire()
    clock.ms += 5000
    assert 5000 == b.acquire()
    with engine.begin() as conn:
        assert not a.renew(conn)
    assert a.epoch is None
    assert ("b", 5000) == (b.view().holder, b.view().epoch)


def test_an_expired_lease_nobody_took_is_renewed_at_the_same_epoch(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a = lease(engine, clock, "a")
    a.acquire()
    clock.ms += 10_000  # paused for ten seconds, and no standby around
    assert a.check()
    assert 1 == a.epoch
    assert clock.ms + 3000 == a.view().expires_at_ms


def test_a_released_lease_is_taken_at_once_with_the_next_epoch(
    engine: sa.Engine, clock: FakeClock
) -> None:
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    a.acquire()
    a.release()
    assert 2 == b.acquire()
    a.release()  # not the holder any more: nothing changes
    assert ("b", 2) == (b.view().holder, b.view().epoch)


def test_every_take_over_bumps_the_epoch(engine: sa.Engine, clock: FakeClock) -> None:
    relays = [lease(engine, clock, name) for name in "abc"]
    epochs = []
    for relay in relays * 2:
        clock.ms += 3000
        relay.epoch = None  # as after a restart of that relay
        epochs.append(relay.acquire())
    assert [3000, 6000, 9000, 12000, 15000, 18000] == epochs  # the store's clock each time


def test_take_overs_within_one_millisecond_still_bump_the_epoch(
    engine: sa.Engine, clock: FakeClock
) -> None:
    clock.ms = 1_000_000
    epochs = []
    for name in "abcd":
        relay = lease(engine, clock, name)
        epochs.append(relay.acquire())
        relay.release()
    assert [1_000_000, 1_000_001, 1_000_002, 1_000_003] == epochs


@pytest.mark.parametrize("edit", ["deleted", "restored_from_backup"])
def test_a_lease_row_deleted_or_restored_from_a_backup_never_gives_an_epoch_below_one_seen(
    engine: sa.Engine, clock: FakeClock, edit: str
) -> None:
    seen = []
    for name in "abc":
        clock.ms += 3000
        seen.append(lease(engine, clock, name).acquire())
    with engine.begin() as conn:
        if edit == "deleted":
            conn.execute(sa.text("DELETE FROM tokensync_relay_lease"))
        else:
            conn.execute(sa.text("UPDATE tokensync_relay_lease SET epoch = 1, expires_at_ms = 0"))
    clock.ms += 1
    epoch = lease(engine, clock, "d").acquire()
    assert epoch is not None
    assert epoch > max(e for e in seen if e is not None)


def test_a_lease_of_another_name_gets_its_own_row(engine: sa.Engine, clock: FakeClock) -> None:
    a = RelayLease(engine, "a", name="staging", ttl_ms=3000, now_ms=clock)
    b = lease(engine, clock, "b")
    assert 1 == a.acquire()
    assert 1 == b.acquire()


def test_a_standby_takes_a_dead_holders_lease_at_once_after_the_store_clock_jumped_back_an_hour(
    engine: sa.Engine, clock: FakeClock
) -> None:
    clock.ms = 10_000_000
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    assert a.acquire() is not None  # then a dies
    clock.ms -= 3_600_000  # the store's clock is set back an hour (NTP, a VM restore)
    assert b.view().expired
    epoch = b.acquire()
    assert epoch is not None
    assert not a.check()


def test_a_live_holder_keeps_its_lease_through_a_small_jump_back_of_the_store_clock(
    engine: sa.Engine, clock: FakeClock
) -> None:
    clock.ms = 10_000_000
    a, b = lease(engine, clock, "a"), lease(engine, clock, "b")
    assert a.acquire() is not None
    clock.ms -= 60_000
    assert b.acquire() is None
    assert a.check()
