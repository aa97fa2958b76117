"""The relay exports its backlog: ``tokensync_relay_backlog_records`` counts the outbox
rows not yet published, also (above all) while Kafka is down and the outbox grows.

One database (PostgreSQL, production's): the count is ``producer.outbox.unpublished_count``,
which the relay tests run on every database; what is new here is that the relay sets the
gauge, and a Kafka that is down costs kafka-python 30 s per connection attempt."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import REGISTRY

from producer.outbox import unpublished_count
from producer.publisher import EventPublisher
from producer.relay import RelayOptions
from producer.store import TokenStore
from shared.keys import Topics
from shared.metrics import RELAY_BACKLOG
from tests.kafka_helpers import kafka_connector, running_relay, wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("tokensync_relay_backlog_records")


def _backlog(store: TokenStore) -> int:
    with store.engine.connect() as conn:
        return unpublished_count(conn)


def _closed_port() -> int:
    """A local port nothing listens on (a Kafka that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_backlog_gauge_counts_unpublished_rows_while_kafka_is_down_and_drops_to_zero_once_published(  # noqa: E501
    store: TokenStore, kafka_bootstrap: str, topics: Topics
) -> None:
    RELAY_BACKLOG.set(-1)  # no count is negative: whatever follows, the relay set
    bootstrap = [f"127.0.0.1:{_closed_port()}"]  # Kafka down until the test says otherwise

    def connect() -> EventPublisher:
        return kafka_connector(bootstrap[0], topics)()

    for i in range(3):
        store.issue(USER, i, f"t{i}")
    with running_relay(store.engine, connect, options=RelayOptions(backoff_max_s=0.2)):
        wait_for(lambda: _gauge() == 3, timeout_s=20, what="the gauge at 3 with Kafka down")
        store.revoke_token(store.list_tokens(USER, 0)[0].id)
        wait_for(lambda: _gauge() == 4, timeout_s=20, what="the gauge following the outbox")
        assert _backlog(store) == 4, "nothing was published"

        bootstrap[0] = kafka_bootstrap  # Kafka is back (the next connection attempt)
        wait_for(lambda: _backlog(store) == 0, timeout_s=60, what="the outbox drained")
        wait_for(lambda: _gauge() == 0, timeout_s=20, what="the gauge back at 0")
