"""Database engines and schema migrations (Alembic, run in-process)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from shared.errors import ConfigError, StoreError

__all__ = ["create_engine", "migrate", "write_transaction"]

_MIGRATIONS = Path(__file__).with_name("migrations")


def create_engine(url: str) -> sa.Engine:
    """An engine for the token store; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"database URL {url!r} is not a SQLAlchemy URL") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
            # Text that is not UTF-8 (a PHP app may write any bytes) reads as str with
            # lone surrogates instead of failing the whole query; the relay then denies
            # that one row and the store's checks refuse such text on the way in.
            dbapi_conn.text_factory = _lenient_text  # type: ignore[attr-defined]
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("the token store runs on SQLite or PostgreSQL")
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10)


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """``engine.begin()`` for a transaction that writes: on SQLite it takes the write lock
    at once (``BEGIN IMMEDIATE``) instead of at its first write, so what it reads first
    (candidate rows, the clock, the last seq) cannot change under it before it writes.
    PostgreSQL transactions lock what they need themselves."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# pg_advisory_xact_lock key of schema migrations: "tokensync" as a 64-bit number.
_PG_MIGRATION_LOCK = int.from_bytes(b"tokensyn", "big") >> 1


def migrate(engine: sa.Engine, revision: str = "head", *, backfill_rows: bool = True) -> None:
    """Bring the schema (tables and outbox triggers) up to ``revision``, then publish the
    rows that are older than the triggers (``producer.backfill``) unless ``backfill_rows``
    is False (``tokensync backfill`` does it then, with progress).

    Safe when several processes start at once on a fresh database (the relay, the API
    and a CLI command of a new stack): one migrates, the others wait and find it done.
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with _sqlite_file_lock(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        if backfill_rows:
            _backfill_if_pending(engine)
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"migrating the token store failed: {e}") from e


def _backfill_if_pending(engine: sa.Engine) -> None:
    from producer.backfill import backfill, pending_since_ms

    with engine.connect() as conn:
        pending = pending_since_ms(conn)
    if pending is not None:
        backfill(engine)


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    """An exclusive lock beside a SQLite database file (its DDL runs outside transactions)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.migrate-lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
