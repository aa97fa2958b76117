"""Database engines and schema migrations (Alembic, run in-process)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from shared.errors import ConfigError, StoreError

__all__ = ["create_engine", "migrate"]

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
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError("the token store runs on SQLite or PostgreSQL")
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema (tables and outbox triggers) up to ``revision``."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"migrating the token store failed: {e}") from e
