"""The relay's store connections, held open from batch to batch: one for reading the outbox
(in autocommit: one round trip per read) and one for the transaction that renews the lease
and marks rows published. No pool checkout and no pre-ping ``SELECT 1`` per batch; a held
connection the database dropped is replaced at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from shared.logs import get_logger

__all__ = ["HeldConnections"]

log = get_logger(__name__)

_T = TypeVar("_T")


class HeldConnections:
    """The relay's two held store connections; used from the relay's thread only."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._reader: sa.Connection | None = None
        self._writer: sa.Connection | None = None

    def run(self, work: Callable[[sa.Connection], _T], *, reading: bool = False) -> _T:
        """Run ``work`` in one transaction on a held connection: the reading one (autocommit:
        psycopg sends ``BEGIN`` and ``COMMIT`` as round trips of their own) or the writing
        one. A held connection the store dropped (a restart, ``pg_terminate_backend``,
        ``KILL``, an idle timeout) shows as an invalidated connection: it is replaced and
        ``work`` runs once more at once (reading the outbox, renewing the lease and marking
        rows are idempotent); any other error is the caller's."""
        for attempt in (1, 2):
            conn = self._held(reading=reading)
            try:
                with conn.begin():
                    return work(conn)
            except sa.exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise
                self.close()
                if attempt == 2:
                    raise
                log.warning("relay_store_connection_replaced", error=str(e.orig)[:200])
        raise AssertionError("unreachable")  # pragma: no cover

    def _held(self, *, reading: bool) -> sa.Connection:
        """The held connection, opened when missing (the pool pre-pings that checkout)."""
        if reading:
            if self._reader is None:
                self._reader = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            return self._reader
        if self._writer is None:
            self._writer = self._engine.connect()
        return self._writer

    def close(self) -> None:
        """Close both (the next ``run`` opens new ones)."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    conn.close()
                except sa.exc.SQLAlchemyError:  # already broken: the pool discards it
                    log.debug("relay_store_connection_close_failed", exc_info=True)
        self._reader = self._writer = None
