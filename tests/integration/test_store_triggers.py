"""Outbox triggers that go missing (``migrate:fresh``, a restore, a manual DROP) are seen
by the relay within seconds: an error, a metric, and no heartbeat certifies the blind time."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from producer.publisher import EventPublisher
from producer.relay import Relay, RelayOptions
from producer.store import TokenStore, utcnow
from producer.trigger_check import missing_triggers
from producer.triggers import drop_statements, install_statements
from producer.wakeup import waker_for
from tests.kafka_helpers import KEYRING

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


def no_kafka() -> EventPublisher:
    raise AssertionError("certifying needs no broker")


def missing_gauge() -> float:
    value = REGISTRY.get_sample_value("tokensync_relay_store_triggers_missing")
    return -1.0 if value is None else value


def run_sql(store: TokenStore, statements: list[str]) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_dropped_triggers_are_detected_and_heartbeats_stop_certifying_until_reinstalled(
    store: TokenStore,
) -> None:
    dialect = store.engine.dialect.name
    waker = waker_for(store.engine)
    relay = Relay(
        store.engine, no_kafka, KEYRING, waker, options=RelayOptions(trigger_check_interval_s=0)
    )
    try:
        with store.engine.connect() as conn:
            assert [] == missing_triggers(conn)
        before = relay.certified_ms()
        assert not relay.triggers_missing
        assert 0 == missing_gauge()

        run_sql(store, drop_statements(dialect))  # what migrate:fresh or a restore leaves
        with store.engine.connect() as conn:
            assert missing_triggers(conn), "the check sees them gone"
        time.sleep(0.05)
        blind = relay.certified_ms()
        assert relay.triggers_missing
        assert missing_gauge() > 0
        assert blind <= before + 50, "nothing after the last good check is certified"
        with store.engine.begin() as conn:  # a change no region will ever hear of
            conn.execute(
                sa.text(
                    "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name,"
                    " token, abilities, created_at, updated_at)"
                    " VALUES (:t, 1, 'blind', :h, '[\"*\"]', :n, :n)"
                ),
                {"t": USER, "h": "d" * 64, "n": utcnow()},
            )
        time.sleep(0.05)
        assert blind == relay.certified_ms(), "certification stays frozen"

        run_sql(store, install_statements(dialect))
        time.sleep(0.05)
        assert relay.certified_ms() > blind
        assert not relay.triggers_missing
        assert 0 == missing_gauge()
    finally:
        relay.close()
        waker.close()
