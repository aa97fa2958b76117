"""Backfilled rows whose created_at lies ahead of the clock (an app in local time, a clock
step): their issue time is clamped to the moment tokensync learned of them."""

from __future__ import annotations

import datetime as dt
import os
import pwd
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from producer import audit as audit_log
from producer.clock import utcnow
from producer.models import PersonalAccessToken
from producer.schema import create_engine, migrate
from producer.store import TokenStore
from producer.token_check import read_stored_token
from shared.tokenformat import checksum, hash_token

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def tokyo_engine(database_url: str) -> Iterator[sa.Engine]:
    """A Laravel app with ``app.timezone = Asia/Tokyo`` (UTC+9) wrote its rows' created_at
    in local time, as Laravel does; one token was created ten minutes before install."""
    yield from _tokyo(database_url)


@pytest.fixture
def tokyo_postgres(postgres_url: str) -> Iterator[sa.Engine]:
    yield from _tokyo(postgres_url)


def _tokyo(url: str) -> Iterator[sa.Engine]:
    engine = create_engine(url)
    PersonalAccessToken.__table__.create(engine)  # type: ignore[attr-defined]
    local = utcnow() + dt.timedelta(hours=9) - dt.timedelta(minutes=10)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
                " abilities, created_at, updated_at) VALUES (:t, 7, 'phone', :h, '[\"*\"]', :c, :c)"
            ),
            {"t": USER, "h": "ab" * 32, "c": local},
        )
    yield engine
    engine.dispose()


def test_revoke_principal_revokes_a_backfilled_token_whose_created_at_lies_ahead(
    tokyo_engine: sa.Engine,
) -> None:
    """'Everything issued before now' must cover every token that exists now. The backfill
    takes created_at as the issue time, so a row whose created_at is ahead of the database
    clock (an app in local time, a skewed app clock) survives revoke all, revoke principal
    and the regions' epochs, in the store and in every region, for hours."""
    migrate(tokyo_engine)  # installs tokensync and backfills the old row
    store = TokenStore(tokyo_engine)
    mutation = store.revoke_principal(USER, 7)
    assert 1 == mutation.removed, "revoke principal left the user's token live"
    assert [] == store.list_tokens(USER, 7)


def test_revoke_all_now_revokes_every_backfilled_token(tokyo_engine: sa.Engine) -> None:
    migrate(tokyo_engine)
    store = TokenStore(tokyo_engine)
    store.revoke_all()
    assert 0 == store.count_live(), "a token that existed before 'revoke all now' is still live"


def test_the_backfill_is_audited_as_one_record_of_who_ran_it_not_as_plain_sql(
    tokyo_engine: sa.Engine,
) -> None:
    """Issue 13 item 4: actor ``sql`` means a Laravel app wrote the row with plain SQL at
    that time. The backfill is tokensync's own act (at install), yet each row it publishes
    gets an audit record 'sql issued token N' stamped with the install time."""
    migrate(tokyo_engine)
    entries = audit_log.read(tokyo_engine)
    assert [] == [(e.actor, e.action) for e in entries if e.actor_kind == "sql"]
    (record,) = [e for e in entries if e.action == "token.backfill"]
    assert {"rows": 1, "batches": 1} == record.detail
    assert record.actor.startswith(f"{pwd.getpwuid(os.getuid()).pw_name}@")
    with tokyo_engine.connect() as conn:
        last = conn.execute(sa.text("SELECT max(seq) FROM tokensync_outbox")).scalar()
    assert last == record.seq
    migrate(tokyo_engine)  # nothing left to take in: no second record
    assert 1 == len([e for e in audit_log.read(tokyo_engine) if e.action == "token.backfill"])


def test_truncate_on_postgresql_leaves_no_backfilled_token_valid_in_the_regions(
    tokyo_postgres: sa.Engine,
) -> None:
    """TRUNCATE is one global epoch at the truncation's time (issue 11 item 9). A
    backfilled row whose issue time was taken from a created_at ahead of the clock is not
    covered by it: the row is gone from the store, and no record the relay publishes denies
    it (no per-row revocation, an epoch older than its issue time): valid in every region."""
    migrate(tokyo_postgres)
    with tokyo_postgres.begin() as conn:
        (issued,) = conn.execute(
            sa.text("SELECT issued_at_ms FROM tokensync_outbox WHERE op = 'issued'")
        ).scalars()
        conn.execute(sa.text("TRUNCATE personal_access_tokens"))
    with tokyo_postgres.connect() as conn:
        assert 0 == conn.execute(sa.text("SELECT count(*) FROM personal_access_tokens")).scalar()
        revoked = conn.execute(
            sa.text("SELECT count(*) FROM tokensync_outbox WHERE op = 'revoked'")
        ).scalar()
        epoch = conn.execute(
            sa.text("SELECT max(before_ms) FROM tokensync_outbox WHERE scope = 'global'")
        ).scalar()
    assert revoked or (epoch is not None and issued < epoch), (
        f"the deleted token (issued_at {issued}) is denied by nothing (global epoch {epoch})"
    )


def test_the_store_fallback_clamps_the_issue_time_of_a_row_not_yet_backfilled(
    tokyo_engine: sa.Engine,
) -> None:
    """A row the backfill has not taken in yet is judged by created_at, clamped to the store
    clock: an epoch a little ahead of the clock (revoke all --before allows some skew)
    covers it, as it covers every token that exists now."""
    migrate(tokyo_engine, backfill_rows=False)
    store = TokenStore(tokyo_engine)
    plain = "k" * 40 + checksum("k" * 40)
    with tokyo_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE personal_access_tokens SET token = :h"), {"h": hash_token(plain)}
        )
        before = store.now_ms(conn) + 3_000
        conn.execute(
            sa.text(
                "INSERT INTO tokensync_epochs (scope, before_ms, updated_at_ms)"
                " VALUES ('global', :b, :b)"
            ),
            {"b": before},
        )
    stored = read_stored_token(store, plain)
    assert stored is not None
    assert stored.record.issued_at_ms is not None
    assert stored.record.issued_at_ms < stored.epoch_ms == before
