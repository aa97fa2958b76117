"""Time as the store sees it: naive UTC datetimes (as Laravel writes them), epoch
milliseconds, ISO text, and the database's own clock (the one the triggers stamp with)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from producer import triggers_mysql

__all__ = ["db_now_ms", "iso", "to_ms", "utcnow"]


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime (whole seconds) Laravel writes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 (UTC) of a naive-UTC datetime, or None."""
    return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()


def to_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch of a naive-UTC or aware datetime."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return int(aware.timestamp() * 1000)


def db_now_ms(conn: sa.Connection) -> int:
    """The database's clock in milliseconds: the clock the triggers stamp rows with
    (on PostgreSQL the body of their ``tokensync_now_ms()``)."""
    if conn.dialect.name == "postgresql":
        expr = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    elif conn.dialect.name in triggers_mysql.DIALECTS:
        expr = f"SELECT {triggers_mysql.NOW_MS}"
    else:
        expr = (
            "SELECT CAST(strftime('%s','now') AS INTEGER) * 1000"
            " + CAST(substr(strftime('%f','now'), 4) AS INTEGER)"
        )
    return int(conn.execute(sa.text(expr)).scalar_one())
