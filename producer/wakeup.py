"""How the relay learns, within milliseconds, that a transaction committed outbox rows.

PostgreSQL: ``LISTEN tokensync_outbox`` (the triggers ``NOTIFY``). SQLite has no
notifications; ``PRAGMA data_version`` changes whenever another connection
commits, and reading it costs microseconds, so it is polled every 2 ms.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Protocol

import psycopg
import sqlalchemy as sa

from producer.triggers import NOTIFY_CHANNEL
from shared.logs import get_logger

__all__ = ["OutboxWaker", "PostgresWaker", "SqliteWaker", "waker_for"]

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


def waker_for(engine: sa.Engine) -> OutboxWaker:
    """The waker that suits the store's database."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresWaker(url)
    return SqliteWaker(url.database or ":memory:")
