"""Attacks on the relay's held store connections (``producer.relay_store``): the API writes
on its own engine, as another process would, while the relay keeps its two connections
open batch after batch (review of issue 18 item 3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from producer.publisher import MemoryPublisher
from producer.relay import Relay
from producer.relay_lease import RelayLease
from producer.schema import create_engine
from producer.store import TokenStore
from shared.events import Keyring, TokenEvent, decode
from tests.conftest import migrated_store
from tests.fencing_helpers import NoWaker

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
KEYRING = Keyring({"conn-1": b"c" * 32}, "conn-1")


def test_the_api_writes_while_the_relay_holds_its_connections_without_blocking_or_losing_a_row(
    database_url: str,
) -> None:
    with migrated_store(database_url) as api:
        relay_engine = create_engine(database_url)
        topic = MemoryPublisher(partition_count=3)
        relay = Relay(relay_engine, lambda: topic, KEYRING, NoWaker())
        stop = threading.Event()
        errors: list[BaseException] = []

        def loop() -> None:
            try:
                while not stop.is_set():
                    relay.publish_batch()
            except BaseException as e:  # reported below
                errors.append(e)

        runner = threading.Thread(target=loop)
        runner.start()
        seqs = []
        try:
            for n in range(40):
                token = api.issue(USER, n, f"t{n}")
                seqs += [token.seq, api.revoke_token(token.id).seq]
        finally:
            stop.set()
            runner.join(30)
        try:
            assert [] == errors
            relay.publish_batch()
            assert 0 == relay.backlog()
            events = [decode(r.key, r.value, r.headers, KEYRING) for r in topic.records()]
            published = [e.seq for e in events if isinstance(e, TokenEvent)]
            assert sorted(seqs) == sorted(published)  # each once
        finally:
            relay.close()
            relay_engine.dispose()


@pytest.fixture(params=["postgres_url", "mysql_url"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A database server's URL (a session there can be ended)."""
    url: str = request.getfixturevalue(request.param)
    return url


def _end_session(engine: sa.Engine, dbapi: object) -> None:
    """End the server session of ``dbapi`` from another connection (an admin's
    ``pg_terminate_backend`` or ``KILL``)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            pid = dbapi.info.backend_pid  # type: ignore[attr-defined]
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        else:
            conn.execute(sa.text(f"KILL {int(dbapi.thread_id())}"))  # type: ignore[attr-defined]


@pytest.fixture
def api_and_relay_engine(server_url: str) -> Iterator[tuple[TokenStore, sa.Engine]]:
    with migrated_store(server_url) as api:
        engine = create_engine(server_url)
        try:
            yield api, engine
        finally:
            engine.dispose()


def test_a_session_ended_between_the_lease_renewal_and_the_mark_publishes_each_row_once_in_order(
    api_and_relay_engine: tuple[TokenStore, sa.Engine],
) -> None:
    """The mark transaction has renewed the lease (a row lock held) when the server ends
    its session: nothing of it commits, the relay replaces the connection, renews and
    marks again; no row is lost, none is published twice, the lease stays this relay's."""
    api, engine = api_and_relay_engine
    topic = MemoryPublisher(partition_count=3)
    lease = RelayLease(engine, "r1")
    relay = Relay(engine, lambda: topic, KEYRING, NoWaker(), lease=lease)
    armed = {"on": False}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _kill_before_mark(conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if armed["on"] and "published_at_ms" in statement and statement.lstrip()[:6] == "UPDATE":
            armed["on"] = False
            _end_session(api.engine, conn.connection.dbapi_connection)

    try:
        assert relay.lease_step()
        epoch = lease.epoch
        first = api.issue(USER, 1, "first")
        assert 1 == relay.publish_batch()
        victim = api.issue(USER, 2, "victim")
        revoked = api.revoke_token(victim.id)
        armed["on"] = True
        with capture_logs() as logs:
            assert 2 == relay.publish_batch()
        assert not armed["on"], "the mark never ran"
        assert ["relay_store_connection_replaced"] == [
            e["event"] for e in logs if e["event"].startswith("relay_store")
        ]
        assert 0 == relay.backlog()
        events = [decode(r.key, r.value, r.headers, KEYRING) for r in topic.records()]
        seqs = [e.seq for e in events if isinstance(e, TokenEvent)]
        assert [first.seq, victim.seq, revoked.seq] == seqs
        assert lease.check() and epoch == lease.epoch
        api.issue(USER, 3, "after")
        assert 1 == relay.publish_batch()
    finally:
        relay.close()
