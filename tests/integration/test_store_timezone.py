"""TOKENSYNC_STORE_TIMEZONE: a Laravel app whose app.timezone is Europe/Berlin writes
wall-clock times into the table; its tokens expire when Laravel says they do."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer.outbox import encode_row, fetch_unpublished
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from producer.store_zone import zone_of
from producer.token_check import read_stored_token
from producer.tokens import format_token, generate_token, hash_token
from shared.events import TokenEvent

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.fixture
def berlin_store(database_url: str) -> Iterator[TokenStore]:
    engine = create_engine(database_url, "Europe/Berlin")
    migrate(engine)
    yield TokenStore(engine)
    engine.dispose()


def laravel_insert(store: TokenStore, expires_in: dt.timedelta) -> str:
    """A row as Laravel on Europe/Berlin writes it: Berlin wall-clock times, no zone."""
    plain = generate_token()
    local_now = dt.datetime.now(BERLIN).replace(tzinfo=None, microsecond=0)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, expires_at, created_at, updated_at)"
                " VALUES (:t, 7, 'berlin', :h, '[\"*\"]', :e, :c, :c)"
            ),
            {
                "t": USER,
                "h": hash_token(plain),
                "e": (local_now + expires_in).strftime("%Y-%m-%d %H:%M:%S"),
                "c": local_now.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        token_id = conn.execute(
            sa.text("SELECT id FROM personal_access_tokens WHERE token = :h"),
            {"h": hash_token(plain)},
        ).scalar_one()
    return format_token(int(token_id), plain)


def test_tokens_written_in_berlin_time_expire_when_laravel_says_they_do(
    berlin_store: TokenStore,
) -> None:
    expired = laravel_insert(berlin_store, dt.timedelta(minutes=-30))
    live = laravel_insert(berlin_store, dt.timedelta(minutes=30))
    now_ms = time.time() * 1000
    zone = zone_of(berlin_store.engine.dialect)
    with berlin_store.engine.connect() as conn:
        events = [encode_row(row, zone) for row in fetch_unpublished(conn, 100)]
    published = sorted(
        e.event.expires_at_ms or 0
        for e in events
        if not isinstance(e, Exception) and isinstance(e.event, TokenEvent)
    )
    assert 2 == len(published)
    # what the regions enforce: 30 minutes ago and in 30 minutes (not offset by 1-2 hours)
    assert abs(published[0] - (now_ms - 30 * 60_000)) < 5_000
    assert abs(published[1] - (now_ms + 30 * 60_000)) < 5_000
    # what the store (fallback, admin API) reads
    for token, minutes in ((expired, -30), (live, 30)):
        stored = read_stored_token(berlin_store, token)
        assert stored is not None
        expires_ms = stored.record.principal.expires_at_ms
        assert expires_ms is not None
        assert abs(expires_ms - (now_ms + minutes * 60_000)) < 5_000
    # and what tokensync writes reads back right in Laravel's zone
    issued = berlin_store.issue(USER, 8, "ours", expires_at=dt.datetime.now(dt.UTC))
    with berlin_store.engine.connect() as conn:
        raw = conn.execute(
            sa.text("SELECT CAST(created_at AS CHAR(19)) FROM personal_access_tokens WHERE id = :i")
            if berlin_store.engine.dialect.name in {"mysql", "mariadb"}
            else sa.text(
                "SELECT CAST(created_at AS TEXT) FROM personal_access_tokens WHERE id = :i"
            ),
            {"i": issued.id},
        ).scalar_one()
    berlin_now = dt.datetime.now(BERLIN).replace(tzinfo=None)
    assert abs((dt.datetime.fromisoformat(str(raw)) - berlin_now).total_seconds()) < 5
