"""Outbox triggers that go missing (``migrate:fresh``, a restore, a manual DROP) are seen
by the relay within seconds: an error, a metric, and no heartbeat certifies the blind time;
``tokensync store repair`` reinstalls them and covers the blind window."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from producer.clock import utcnow
from producer.publisher import EventPublisher
from producer.relay import Relay, RelayOptions
from producer.store import TokenStore
from producer.trigger_check import missing_triggers
from producer.triggers import drop_statements, install_statements
from producer.wakeup import waker_for
from shared.events import GLOBAL_SCOPE
from tests.cli_helpers import run_at_terminal, run_cli
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


def test_store_repair_reinstalls_the_triggers_and_a_global_epoch_covers_the_blind_window(
    store: TokenStore,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dialect = store.engine.dialect.name
    victim = store.issue(USER, 1, "revoked while nobody listened")
    run_sql(store, drop_statements(dialect))
    with store.engine.begin() as conn:  # Laravel revokes a token: no outbox row, no region hears
        conn.execute(sa.text("DELETE FROM personal_access_tokens WHERE id = :i"), {"i": victim.id})

    refused = run_cli(monkeypatch, capsys, database_url, "store", "repair", "--json")
    assert 2 == refused.code, refused.err
    assert "--yes" in refused.out + refused.err
    with store.engine.connect() as conn:
        assert missing_triggers(conn), "a refused repair changes nothing"

    run = run_cli(
        monkeypatch, capsys, database_url, "store", "repair", "--yes", "--reason", "drill", "--json"
    )
    assert 0 == run.code, run.err
    result = json.loads(run.out)
    assert result["reinstalled"], "it names what was missing"
    with store.engine.connect() as conn:
        assert [] == missing_triggers(conn)
        epoch = conn.execute(
            sa.text(
                "SELECT before_ms FROM tokensync_outbox WHERE kind = 'epoch' AND scope = :s"
                " ORDER BY seq DESC"
            ),
            {"s": GLOBAL_SCOPE},
        ).first()
        issued = conn.execute(
            sa.text("SELECT issued_at_ms FROM tokensync_outbox WHERE token_hash = :h"),
            {"h": victim.token_hash},
        ).scalar_one()
    assert epoch is not None and epoch.before_ms > issued, "the blind revocation is covered"

    again = run_cli(monkeypatch, capsys, database_url, "store", "repair", "--json")
    assert 0 == again.code and [] == json.loads(again.out)["reinstalled"]
    later = store.issue(USER, 2, "after the repair")
    store.revoke_token(later.id)
    with store.engine.connect() as conn:
        ops = conn.execute(
            sa.text("SELECT op FROM tokensync_outbox WHERE token_hash = :h ORDER BY seq"),
            {"h": later.token_hash},
        ).scalars()
        assert ["issued", "revoked"] == list(ops), "the triggers work again"


def test_on_postgresql_a_trigger_set_back_to_plain_enable_is_missing_until_store_repair(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trigger that is ENABLE instead of ENABLE ALWAYS stays silent in
    ``session_replication_role = replica`` sessions (a seeder, pg_restore
    --disable-triggers), so the check counts it as missing; ``store repair`` makes it
    fire always again."""
    from producer.schema import create_engine, migrate

    engine = create_engine(postgres_url)
    migrate(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("ALTER TABLE personal_access_tokens ENABLE TRIGGER tokensync_pat_outbox")
            )
        with engine.connect() as conn:
            assert ["personal_access_tokens.tokensync_pat_outbox"] == missing_triggers(conn)
        run = run_cli(
            monkeypatch, capsys, postgres_url, "store", "repair", "--yes", "--reason", "drill"
        )
        assert 0 == run.code, run.err
        with engine.connect() as conn:
            assert [] == missing_triggers(conn)
            state = conn.execute(
                sa.text("SELECT tgenabled FROM pg_trigger WHERE tgname = 'tokensync_pat_outbox'")
            ).scalar_one()
        assert "A" == state
    finally:
        engine.dispose()


def test_store_repair_asks_at_a_terminal_and_changes_nothing_unless_confirmed(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Its [y/N] question as a person meets it: the question, a "n" that changes nothing,
    a "y" that repairs; one line each way, never a traceback."""
    from producer.schema import create_engine, migrate

    engine = create_engine(sqlite_url)
    migrate(engine)
    store = TokenStore(engine)
    try:
        run_sql(store, drop_statements(engine.dialect.name))
        args = ["store", "repair", "--reason", "drill"]
        env = {"TOKENSYNC_DATABASE_URL": sqlite_url}
        declined = run_at_terminal(tmp_path, args, answer="n", env_extra=env, timeout_s=60)
        assert 1 == declined.code, declined.out
        assert "Missing: " in declined.out and "[y/N]" in declined.out
        assert "nothing was changed" in declined.out and "Traceback" not in declined.out
        with engine.connect() as conn:
            assert missing_triggers(conn), "a declined repair changes nothing"

        confirmed = run_at_terminal(tmp_path, args, answer="y", env_extra=env, timeout_s=60)
        assert 0 == confirmed.code, confirmed.out
        assert "reinstalled the outbox triggers" in confirmed.out
        assert "global epoch seq" in confirmed.out and "Traceback" not in confirmed.out
        with engine.connect() as conn:
            assert [] == missing_triggers(conn)
    finally:
        engine.dispose()
