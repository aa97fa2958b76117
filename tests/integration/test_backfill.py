"""Installing on an existing Laravel table publishes the tokens that were already there."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer.clock import utcnow
from producer.models import PersonalAccessToken
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from shared.events import TokenEvent, TokenOp
from shared.keys import Topics
from tests.kafka_helpers import kafka_connector, read_topic, running_relay

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def laravel_engine(database_url: str) -> Iterator[sa.Engine]:
    """A database where a Laravel app created Sanctum's table and issued 12 tokens."""
    engine = create_engine(database_url)
    PersonalAccessToken.__table__.create(engine)  # type: ignore[attr-defined]
    now = utcnow()
    rows = [
        {
            "t": USER,
            "i": i,
            "h": f"{i:064x}",
            "c": None if i % 4 == 0 else now - dt.timedelta(days=i),
            "e": now - dt.timedelta(days=1) if i == 11 else None,
        }
        for i in range(12)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, expires_at, created_at, updated_at)"
                " VALUES (:t, :i, 'laravel', :h, '[\"*\"]', :e, :c, :c)"
            ),
            rows,
        )
    yield engine
    engine.dispose()


def issued_rows(engine: sa.Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT token_hash, issued_at_ms FROM tokensync_outbox WHERE op = 'issued'"
                " ORDER BY token_hash"
            )
        ).all()
    return [(r.token_hash, r.issued_at_ms) for r in rows]


def test_installing_on_an_existing_table_publishes_every_live_token_once(
    laravel_engine: sa.Engine, kafka_bootstrap: str, topics: Topics
) -> None:
    migrate(laravel_engine)
    live = {f"{i:064x}" for i in range(11)}  # token 11 expired yesterday
    published = issued_rows(laravel_engine)
    assert live == {h for h, _ in published}
    assert len(published) == len(live)
    assert 0 == dict(published)[f"{0:064x}"], "created_at NULL: issued at 0, every epoch covers"
    migrate(laravel_engine)  # a second start publishes nothing again
    assert published == issued_rows(laravel_engine)

    with running_relay(laravel_engine, kafka_connector(kafka_bootstrap, topics)):
        events = [
            e
            for e in (
                r.event() for r in read_topic(kafka_bootstrap, topics.tokens, expect=len(live))
            )
            if isinstance(e, TokenEvent)
        ]
    assert live == {e.token_hash for e in events if e.op is TokenOp.ISSUED}

    store = TokenStore(laravel_engine)
    assert 12 == store.revoke_all().removed  # the old rows fall to the global scope too
    with laravel_engine.connect() as conn:
        assert 0 == conn.execute(sa.text("SELECT count(*) FROM personal_access_tokens")).scalar()


def test_an_interrupted_backfill_resumes_where_it_stopped(laravel_engine: sa.Engine) -> None:
    from producer.backfill import backfill

    migrate(laravel_engine, backfill_rows=False)
    seen: list[tuple[int, int]] = []

    def stop_after_first_batch(done: int, total: int) -> None:
        seen.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backfill(laravel_engine, batch_size=5, progress=stop_after_first_batch)
    assert [(5, 12)] == seen
    assert 5 == len(issued_rows(laravel_engine))
    result = backfill(laravel_engine, batch_size=5, progress=lambda d, t: seen.append((d, t)))
    assert (7, 2) == (result.rows, result.batches)
    assert [(5, 12), (5, 7), (7, 7)] == seen
    assert 11 == len(issued_rows(laravel_engine))
    assert 0 == backfill(laravel_engine).rows


def test_no_heartbeat_certifies_past_a_pending_backfill(laravel_engine: sa.Engine) -> None:
    from producer.backfill import backfill, pending_since_ms
    from producer.relay import Relay
    from producer.wakeup import waker_for
    from tests.kafka_helpers import KEYRING

    migrate(laravel_engine, backfill_rows=False)
    with laravel_engine.connect() as conn:
        pending = pending_since_ms(conn)
    assert pending is not None
    waker = waker_for(laravel_engine)

    def no_kafka() -> object:
        raise AssertionError("certifying needs no broker")

    relay = Relay(laravel_engine, no_kafka, KEYRING, waker)  # type: ignore[arg-type]
    try:
        assert relay.certified_ms() <= pending
        backfill(laravel_engine)
        with laravel_engine.connect() as conn:
            assert pending_since_ms(conn) is None
        # the backfilled rows are unpublished now: still held back by them
        assert relay.certified_ms() <= pending + 5_000
    finally:
        waker.close()
