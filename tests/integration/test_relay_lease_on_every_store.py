"""The relay lease on SQLite, PostgreSQL and MariaDB, by each store's own clock: one
holder at a time, also when several standbys race for an expired lease."""

from __future__ import annotations

import threading
import time

from producer.relay_lease import RelayLease
from producer.store import TokenStore


def test_exactly_one_of_several_racing_standbys_takes_an_expired_lease(store: TokenStore) -> None:
    first = RelayLease(store.engine, "first", ttl_ms=300)
    assert first.acquire() is not None
    epoch = first.epoch
    assert epoch is not None
    racers = [RelayLease(store.engine, f"racer-{i}", ttl_ms=3000) for i in range(4)]
    time.sleep(0.4)  # the first holder's lease runs out by the store's clock
    go = threading.Barrier(len(racers))
    results: dict[str, int | None] = {}

    def race(lease: RelayLease) -> None:
        go.wait()
        results[lease.holder] = lease.acquire()

    threads = [threading.Thread(target=race, args=(lease,)) for lease in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = {holder: got for holder, got in results.items() if got is not None}
    [(winner, won)] = winners.items()
    assert won > epoch  # plus one, or the store's clock in ms if that is higher
    assert not first.check()
    assert (winner, won) == (first.view().holder, first.view().epoch)


def test_a_live_lease_is_renewed_and_refused_to_a_standby_then_released_to_it(
    store: TokenStore,
) -> None:
    active = RelayLease(store.engine, "active", ttl_ms=3000)
    standby = RelayLease(store.engine, "standby", ttl_ms=3000)
    epoch = active.acquire()
    assert epoch is not None
    assert standby.acquire() is None
    assert epoch == active.acquire()
    assert active.check()
    view = standby.view()
    assert 2500 < view.expires_at_ms - view.now_ms <= 3000
    active.release()
    taken = standby.acquire()
    assert taken is not None and taken > epoch
    with store.engine.begin() as conn:
        assert not active.renew(conn)
    assert active.acquire() is None


def test_a_stale_relay_has_the_newest_row_of_each_key_it_sent_late_published_again(
    store: TokenStore,
) -> None:
    import sqlalchemy as sa

    from producer.late_records import republish_newest
    from producer.models import OUTBOX
    from producer.outbox import Encoded
    from shared.events import EpochEvent, TokenEvent, TokenOp

    issued = store.issue("App\\Models\\User", 1, "late")
    revoked = store.revoke_token(issued.id)
    other = store.issue("App\\Models\\User", 2, "untouched")
    with store.engine.begin() as conn:
        conn.execute(sa.update(OUTBOX).values(published_at_ms=1, kafka_partition=0, kafka_offset=0))
        late = [
            Encoded(
                issued.seq,
                TokenEvent(
                    issued.seq,
                    TokenOp.ISSUED,
                    issued.token_hash,
                    issued.id,
                    "U",
                    "1",
                    "late",
                    ("*",),
                    1,
                    1,
                    None,
                    1,
                ),
                b"",
            ),
            Encoded(99, EpochEvent(99, "global", 1, 1), b""),  # a scope with no row: nothing
        ]
        assert [revoked.seq] == republish_newest(conn, late)
        unpublished = conn.execute(
            sa.select(OUTBOX.c.seq).where(OUTBOX.c.published_at_ms.is_(None))
        ).scalars()
        assert [revoked.seq] == list(unpublished)
    assert other.seq > revoked.seq
