"""The table driven the way Laravel's Eloquent drives it (Sanctum unchanged), on SQLite,
PostgreSQL and MariaDB: every change is enforced in every region."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from producer.tokens import format_token, generate_token, hash_token
from shared.keys import Topics
from shared.outcomes import Outcome
from tests.harness import Pipeline, pipeline_context
from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration
USER = "App\\Models\\User"


@pytest.fixture
def laravel_pipeline(
    tmp_path: Path,
    kafka_bootstrap: str,
    database_url: str,
    topics: Topics,
    region_urls: dict[str, str],
) -> Iterator[Pipeline]:
    yield from pipeline_context(
        Pipeline(tmp_path, kafka_bootstrap, database_url, topics, region_urls)
    )


def quote(dialect: str, name: str) -> str:
    return f"`{name}`" if dialect in {"mysql", "mariadb"} else f'"{name}"'


def create_token(engine: sa.Engine, user_id: int, abilities: str) -> str:
    """``$user->createToken('api', [...])``: Eloquent's insert, column order and all."""
    q = lambda n: quote(engine.dialect.name, n)  # noqa: E731
    plain = generate_token()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    columns = ["name", "token", "abilities", "expires_at", "tokenable_id", "tokenable_type"]
    columns += ["updated_at", "created_at"]
    sql = (
        f"insert into {q('personal_access_tokens')} ({', '.join(q(c) for c in columns)})"  # noqa: S608
        " values (:name, :token, :abilities, NULL, :uid, :type, :now, :now)"
    )
    params = {
        "name": "api",
        "token": hash_token(plain),
        "abilities": abilities,
        "uid": user_id,
        "type": USER,
        "now": now,
    }
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            token_id = conn.execute(sa.text(sql + ' returning "id"'), params).scalar_one()
        else:
            token_id = conn.execute(sa.text(sql), params).lastrowid
    return format_token(int(token_id), plain)


def token_id(token: str) -> int:
    return int(token.split("|", 1)[0])


def run(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_eloquent_creates_updates_and_deletes_are_enforced_in_every_region(
    laravel_pipeline: Pipeline,
) -> None:
    pipeline = laravel_pipeline
    engine = pipeline.store.engine
    q = lambda n: quote(engine.dialect.name, n)  # noqa: E731
    pipeline.start_relay()
    regions = [r.name for r in pipeline.settings.regions]
    for region in regions:
        pipeline.start_worker(region)
    for region in regions:
        pipeline.wait_ready(region)
    validators = [pipeline.validator(r) for r in regions]

    def everywhere(token: str, outcome: Outcome, abilities: tuple[str, ...] = ()) -> None:
        wait_for(
            lambda: all(v.validate(token, abilities).outcome == outcome for v in validators),
            30,
            f"{outcome} in every region",
        )

    try:
        single = create_token(engine, 1, '["orders:read"]')
        other = create_token(engine, 2, '["*"]')
        second = create_token(engine, 2, '["*"]')
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
