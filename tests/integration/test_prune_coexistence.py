"""Laravel's ``sanctum:prune-expired`` and ``tokensync token prune`` on one table, at the
same time, on SQLite, PostgreSQL and MariaDB: every pruned row is a revocation in every
region, each row's deletion is published once, and a live token stays valid."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from producer.models import OUTBOX
from shared.outcomes import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for
from tests.laravel_helpers import eloquent_insert, every_region_running, quote

pytestmark = pytest.mark.integration
EXPIRED = 12  # tokens that expired two days ago: both prunes may delete each


def sanctum_prune_expired(engine: sa.Engine, hours: int) -> int:
    """``php artisan sanctum:prune-expired --hours=N``: Eloquent's mass delete."""
    q = lambda n: quote(engine.dialect.name, n)  # noqa: E731
    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(hours=hours)
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    f"delete from {q('personal_access_tokens')} where {q('expires_at')} < :c"  # noqa: S608
                ),
                {"c": cutoff},
            ).rowcount
        )


def test_sanctums_prune_and_tokensyncs_prune_run_together_and_every_pruned_token_is_revoked(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    engine = pipeline.store.engine
    validators = every_region_running(pipeline)
    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(days=2)
    expired = [eloquent_insert(engine, expires_at=long_ago) for _ in range(EXPIRED)]
    live = eloquent_insert(engine)

    def everywhere(token: str, check: Callable[[Outcome, str | None], bool], what: str) -> None:
        def holds() -> bool:
            results = [v.validate(token, ()) for v in validators]
            return all(check(r.outcome, r.reason) for r in results)

        wait_for(holds, 30, f"{what} in every region")

    try:
        everywhere(live, lambda o, _r: o == Outcome.VALID, "live token valid")
        for token in expired:  # known to every region, refused as expired
            everywhere(token, lambda o, r: o == Outcome.INVALID and r == "expired", "expired")

        # Both prunes at once, each in its own transaction and connection.
        start = threading.Barrier(2)
        removed: dict[str, int] = {}
        errors: list[BaseException] = []

        def laravel() -> None:
            try:
                start.wait(10)
                removed["laravel"] = sanctum_prune_expired(engine, 24)
            except BaseException as e:
                errors.append(e)

        def tokensync() -> None:
            try:
                start.wait(10)
                removed["tokensync"] = pipeline.store.prune_expired(24).removed
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=laravel), threading.Thread(target=tokensync)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert EXPIRED == removed["laravel"] + removed["tokensync"], removed

        # Each pruned row's deletion is written (and so published) exactly once.
        ids = [int(t.split("|", 1)[0]) for t in expired]
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(OUTBOX.c.token_id, OUTBOX.c.op).where(OUTBOX.c.token_id.in_(ids))
            ).all()
        revocations = sorted(r.token_id for r in rows if r.op == "revoked")
        assert sorted(ids) == revocations, rows

        # Every region applied each deletion: the token is no longer known there as an
        # expired token (a tombstone of an expired token need not outlive its expiry).
        for token in expired:
            everywhere(token, lambda o, r: o == Outcome.INVALID and r != "expired", "deleted")
        everywhere(live, lambda o, _r: o == Outcome.VALID, "live token still valid")
        assert 0 == sanctum_prune_expired(engine, 24) + pipeline.store.prune_expired(24).removed
    finally:
        for validator in validators:
            validator.close()
