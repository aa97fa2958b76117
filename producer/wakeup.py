"""How the relay learns, within milliseconds, that a transaction committed outbox rows.

PostgreSQL: ``LISTEN tokensync_outbox`` (the triggers ``NOTIFY``). SQLite has no
notifications; ``PRAGMA data_version`` changes whenever another connection
commits, and reading it costs microseconds, so it is polled every 2 ms.
MySQL/MariaDB have neither: a dedicated autocommit READ COMMITTED connection
polls the count and highest seq of unpublished outbox rows every 5 ms (an index
range scan of ``tokensync_outbox_unpublished``, which the relay keeps near empty:
~0.1 ms on loopback). A change means a transaction committed outbox rows (or the
relay published some: a harmless extra look); revoke -> published thus costs at
most one interval more than on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Protocol

import psycopg
import sqlalchemy as sa

from producer.triggers import NOTIFY_CHANNEL
from shared.logs import get_logger

__all__ = ["MysqlWaker", "OutboxWaker", "PostgresWaker", "SqliteWaker", "waker_for"]

log = get_logger(__name__)


class OutboxWaker(Protocol):
    """Blocks until the outbox may have new rows, or ``timeout_s`` passed."""

    def wait(self, timeout_s: float) -> bool:
        """True if woken by a commit, False on timeout."""
        ...

    def close(self) -> None:
        """Release the listening connection."""
        ...


class PostgresWaker:
    """A dedicated autocommit connection that LISTENs on the outbox channel."""

    def __init__(self, url: sa.URL) -> None:
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout_s: float) -> bool:
        woken = False
        for _ in self._conn.notifies(timeout=max(timeout_s, 0.0), stop_after=1):
            woken = True
        # Drain what else arrived so that one burst of commits wakes us once.
        for _ in self._conn.notifies(timeout=0):
            woken = True
        return woken

    def close(self) -> None:
        self._conn.close()


class SqliteWaker:
    """Polls ``PRAGMA data_version`` of the database file every ``interval_s``."""

    def __init__(self, path: str, interval_s: float = 0.002) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._interval = interval_s
        self._version = self._read()

    def _read(self) -> int:
        value: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return value

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            version = self._read()
            if version != self._version:
                self._version = version
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self._interval)

    def close(self) -> None:
        self._conn.close()


class MysqlWaker:
    """Polls the unpublished outbox rows' count and highest seq every ``interval_s``."""

    _PROBE = sa.text(
        "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM tokensync_outbox WHERE published_at_ms IS NULL"
    )

    def __init__(self, engine: sa.Engine, interval_s: float = 0.005) -> None:
        self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._interval = interval_s
        self._seen = self._read()

    def _read(self) -> tuple[int, int]:
        row = self._conn.execute(self._PROBE).one()
        return int(row[0]), int(row[1])

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                seen = self._read()
            except sa.exc.SQLAlchemyError as e:
                # The relay's own queries will report the outage; wake it so it does.
                log.warning("outbox_waker_failed", error=str(e).splitlines()[0])
                self._conn.invalidate()
                return True
            if seen != self._seen:
                self._seen = seen
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self._interval)

    def close(self) -> None:
        self._conn.close()


def waker_for(engine: sa.Engine) -> OutboxWaker:
    """The waker that suits the store's database."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresWaker(url)
    if url.get_backend_name() in {"mysql", "mariadb"}:
        return MysqlWaker(engine)
    return SqliteWaker(url.database or ":memory:")
