"""Database engines and schema migrations (Alembic, run in-process)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from producer.store_zone import parse_zone, set_zone
from shared.errors import ConfigError, StoreError

__all__ = ["MYSQL_DIALECTS", "create_engine", "migrate", "write_transaction"]

_MIGRATIONS = Path(__file__).with_name("migrations")


def create_engine(url: str, timezone: str = "UTC") -> sa.Engine:
    """An engine for the token store; SQLite gets WAL, a busy timeout and foreign keys.
    ``timezone`` is the zone of the table's naive timestamps (``producer.store_zone``)."""
    zone = parse_zone(timezone)
    engine = _create_engine(url)
    set_zone(engine, zone)
    return engine


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as e:  # ValueError: a port that is no number
        # the URL is not repeated: it may hold the password
        raise ConfigError(
            "the database URL is not a SQLAlchemy URL (dialect://user:password@host:port/db)"
        ) from e
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
    if parsed.get_backend_name() in MYSQL_DIALECTS:
        return _mysql_engine(parsed)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("the token store runs on SQLite, PostgreSQL, MySQL 8 or MariaDB 10.6+")
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10)


MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})


def _mysql_engine(parsed: sa.URL) -> sa.Engine:
    """MySQL/MariaDB through PyMySQL: sessions in UTC (Laravel's ``timestamp`` columns are
    converted to and from the session's time zone), utf8mb4, READ COMMITTED (the relay
    and the waker must see rows as soon as they commit)."""
    if parsed.get_driver_name() not in {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector"}:
        raise ConfigError(f"unsupported MySQL driver {parsed.get_driver_name()!r}: use +pymysql")
    if parsed.get_driver_name() != "pymysql":
        raise ConfigError(
            "MySQL and MariaDB stores are reached through PyMySQL: use mysql+pymysql://"
        )
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        connect_args={"charset": "utf8mb4", "init_command": "SET time_zone = '+00:00'"},
    )


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """``engine.begin()`` for a transaction that writes: on SQLite it takes the write lock
    at once (``BEGIN IMMEDIATE``) instead of at its first write, so what it reads first
    (candidate rows, the clock, the last seq) cannot change under it before it writes.
    PostgreSQL, MySQL and MariaDB transactions lock what they need themselves (locking
    reads, ``SELECT ... FOR UPDATE``)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# GET_LOCK name of schema migrations on MySQL/MariaDB (held by the session: DDL commits).
_MYSQL_MIGRATION_LOCK = "tokensync.migrate"

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
            if conn.dialect.name in MYSQL_DIALECTS:
                conn.execute(sa.text("SELECT GET_LOCK(:k, 300)"), {"k": _MYSQL_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, revision)
            finally:
                if conn.dialect.name in MYSQL_DIALECTS:
                    conn.execute(sa.text("DO RELEASE_LOCK(:k)"), {"k": _MYSQL_MIGRATION_LOCK})
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
