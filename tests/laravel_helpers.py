"""The token table driven as a Laravel application drives it (Sanctum unchanged): plain SQL
in Eloquent's column order, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from producer.tokens import format_token, generate_token, hash_token
from shared.validator import Validator
from tests.harness import Pipeline

USER = "App\\Models\\User"


def quote(dialect: str, name: str) -> str:
    """An identifier quoted the way the dialect's grammar in Laravel quotes it."""
    return f"`{name}`" if dialect in {"mysql", "mariadb"} else f'"{name}"'


def laravel_now() -> dt.datetime:
    """Now, as the naive UTC datetime (whole seconds) Laravel writes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def insert_raw(
    engine: sa.Engine, token: str, abilities: str | None = '["read"]', **columns: object
) -> None:
    """A row written the way a Laravel app (or an operator's psql) would: plain SQL, the
    values as given (``columns`` add to or override the defaults; ``token`` is stored as
    is, so it may be no hash at all)."""
    values: dict[str, object] = {
        "tokenable_type": USER,
        "tokenable_id": 7,
        "name": "laravel",
        "token": token,
        "abilities": abilities,
        "created_at": laravel_now(),
        "updated_at": laravel_now(),
        **columns,
    }
    names = ", ".join(values)
    params = ", ".join(f":{n}" for n in values)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO personal_access_tokens ({names}) VALUES ({params})"),  # noqa: S608
            values,
        )


def eloquent_insert(
    engine: sa.Engine,
    *,
    user_id: int = 7,
    abilities: str = '["*"]',
    expires_at: dt.datetime | None = None,
) -> str:
    """``$user->createToken('api', [...], $expiresAt)``: Eloquent's insert, column order
    and all; returns the token as Sanctum hands it out (``id|plain``)."""
    q = lambda n: quote(engine.dialect.name, n)  # noqa: E731
    plain = generate_token()
    now = laravel_now()
    columns = ["name", "token", "abilities", "expires_at", "tokenable_id", "tokenable_type"]
    columns += ["updated_at", "created_at"]
    sql = (
        f"insert into {q('personal_access_tokens')} ({', '.join(q(c) for c in columns)})"  # noqa: S608
        " values ('api', :token, :abilities, :expires, :uid, :type, :now, :now)"
    )
    params = {
        "token": hash_token(plain),
        "abilities": abilities,
        "expires": expires_at,
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


def every_region_running(pipeline: Pipeline) -> list[Validator]:
    """Start the relay and a worker per region, wait until every region is ready; a
    validator of each region (the caller closes them)."""
    pipeline.start_all()
    return [pipeline.validator(r.name) for r in pipeline.settings.regions]
