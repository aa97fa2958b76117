"""The table driven the way Laravel's Eloquent drives it (Sanctum unchanged), on SQLite,
PostgreSQL and MariaDB: every change is enforced in every region."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from shared.outcomes import Outcome
from tests.harness import Pipeline
from tests.kafka_helpers import wait_for
from tests.laravel_helpers import USER, eloquent_insert, every_region_running, quote

pytestmark = pytest.mark.integration


def token_id(token: str) -> int:
    return int(token.split("|", 1)[0])


def run(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_eloquent_creates_updates_and_deletes_are_enforced_in_every_region(
    any_pipeline: Pipeline,
) -> None:
    pipeline = any_pipeline
    engine = pipeline.store.engine
    q = lambda n: quote(engine.dialect.name, n)  # noqa: E731
    validators = every_region_running(pipeline)

    def everywhere(token: str, outcome: Outcome, abilities: tuple[str, ...] = ()) -> None:
        wait_for(
            lambda: all(v.validate(token, abilities).outcome == outcome for v in validators),
            30,
            f"{outcome} in every region",
        )

    try:
        single = eloquent_insert(engine, user_id=1, abilities='["orders:read"]')
        other = eloquent_insert(engine, user_id=2)
        second = eloquent_insert(engine, user_id=2)
        everywhere(single, Outcome.VALID, ("orders:read",))
        everywhere(single, Outcome.FORBIDDEN, ("orders:write",))
        everywhere(other, Outcome.VALID)

        # Sanctum on each request: last_used_at only; nothing to publish, nothing changes.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        pat = q("personal_access_tokens")
        run(
            engine,
            f"update {pat} set {q('last_used_at')} = :n, {q('updated_at')} = :n"  # noqa: S608
            f" where {q('id')} = :i",
            n=now,
            i=token_id(single),
        )
        # $token->forceFill(['abilities' => [...]])->save()
        run(
            engine,
            f"update {pat} set {q('abilities')} = :a, {q('updated_at')} = :n"  # noqa: S608
            f" where {q('id')} = :i",
            a='["orders:read","orders:write"]',
            n=now,
            i=token_id(single),
        )
        everywhere(single, Outcome.VALID, ("orders:write",))

        # $token->delete()
        run(engine, f"delete from {pat} where {q('id')} = :i", i=token_id(single))  # noqa: S608
        everywhere(single, Outcome.INVALID)

        # $user->tokens()->delete()
        run(
            engine,
            f"delete from {pat} where {pat}.{q('tokenable_type')} = :t"  # noqa: S608
            f" and {pat}.{q('tokenable_id')} = :u and {pat}.{q('tokenable_id')} is not null",
            t=USER,
            u=2,
        )
        everywhere(other, Outcome.INVALID)
        everywhere(second, Outcome.INVALID)
    finally:
        for validator in validators:
            validator.close()
