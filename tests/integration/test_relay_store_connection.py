"""The relay's held store connections (issue 18): every batch's outbox read (in autocommit)
and mark run on connections it keeps open (no pool checkout, no pre-ping ``SELECT 1`` per
batch), and a connection the database dropped is replaced at once, losing no row (real SQLite,
PostgreSQL and MariaDB stores; the in-memory topic stands in for Kafka, which plays no
part in this)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from producer.publisher import MemoryPublisher
from producer.relay import Relay
from producer.store import TokenStore
from shared.events import Keyring, TokenEvent, TokenOp, decode
from tests.conftest import migrated_store
from tests.fencing_helpers import NoWaker

USER = "App\\Models\\User"
KEYRING = Keyring({"conn-1": b"c" * 32}, "conn-1")


@pytest.fixture(params=["postgres_url", "mysql_url"])
def server_store(request: pytest.FixtureRequest) -> Iterator[TokenStore]:
    """A migrated store on a database server (a connection there can be dropped)."""
    with migrated_store(request.getfixturevalue(request.param)) as store:
        yield store


def _events(topic: MemoryPublisher) -> list[TokenEvent]:
    events = [decode(r.key, r.value, r.headers, KEYRING) for r in topic.records()]
    return [e for e in events if isinstance(e, TokenEvent)]


def test_the_relay_reads_and_marks_every_batch_on_one_held_store_connection(
    store: TokenStore,
) -> None:
    topic = MemoryPublisher(partition_count=3)
    relay = Relay(store.engine, lambda: topic, KEYRING, NoWaker())
    checkouts: list[object] = []
    counting = {"on": False}

    @sa.event.listens_for(store.engine, "checkout")
    def _count(_dbapi: object, record: object, _proxy: object) -> None:
        if counting["on"]:
            checkouts.append(record)

    try:
        store.issue(USER, 1, "first")
        assert 1 == relay.publish_batch()  # opens the held connections
        for i in range(5):
            store.issue(USER, 1, f"t{i}")
            counting["on"] = True
            assert 1 == relay.publish_batch()
            counting["on"] = False
        assert [] == checkouts  # old relay: two per batch (read, mark), each pre-pinged
        assert 0 == relay.backlog()
    finally:
        relay.close()


def _drop(store: TokenStore, dbapi: object) -> None:
    """End the server session of the relay's held connection, as a restart or an admin
    (``pg_terminate_backend``, ``KILL``) would."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            pid = dbapi.info.backend_pid  # type: ignore[attr-defined]
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        else:
            conn.execute(sa.text(f"KILL {int(dbapi.thread_id())}"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("dropped_before", ["read", "mark"])
def test_a_held_store_connection_the_database_dropped_is_replaced_at_once_losing_no_row(
    server_store: TokenStore, dropped_before: str
) -> None:
    store = server_store
    held: list[object] = []
    armed = {"drop": False}

    @sa.event.listens_for(store.engine, "checkout")
    def _remember(dbapi: object, _record: object, _proxy: object) -> None:
        held.append(dbapi)

    class DropBeforeMark(MemoryPublisher):
        def publish(self, records):  # type: ignore[no-untyped-def]
            placed = super().publish(records)
            if armed["drop"]:  # acknowledged, not yet marked
                armed["drop"] = False
                _drop(store, held_connection)
            return placed

    topic = DropBeforeMark(partition_count=3)
    relay = Relay(store.engine, lambda: topic, KEYRING, NoWaker())
    try:
        first = store.issue(USER, 1, "first")
        held.clear()
        assert 1 == relay.publish_batch()
        reader, writer = held  # the relay's held connections, each checked out once
        held_connection = reader if dropped_before == "read" else writer
        victim = store.issue(USER, 2, "victim")
        revoked = store.revoke_token(victim.id)
        if dropped_before == "read":
            _drop(store, held_connection)
        else:
            armed["drop"] = True
        with capture_logs() as logs:
            assert 2 == relay.publish_batch()  # no StoreError, no retry pause
        assert ["relay_store_connection_replaced"] == [
            e["event"] for e in logs if e["event"].startswith("relay_store")
        ]
        assert 0 == relay.backlog()
        expected = [
            (first.seq, TokenOp.ISSUED),
            (victim.seq, TokenOp.ISSUED),
            (revoked.seq, TokenOp.REVOKED),
        ]
        assert expected == [(e.seq, e.op) for e in _events(topic)]
        store.issue(USER, 3, "after")
        assert 1 == relay.publish_batch()  # the replacement is held in turn
    finally:
        relay.close()
