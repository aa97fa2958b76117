"""The relay's backlog gauge: ``tokensync_relay_backlog_records``, the outbox rows not yet
published, counted on a cadence of its own (a connection attempt to a Kafka that is down
blocks the relay loop for long, and that is when the backlog matters)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from producer.outbox import unpublished_count
from shared.errors import StoreError
from shared.logs import get_logger
from shared.metrics import RELAY_BACKLOG

__all__ = ["count_backlog", "count_backlog_until"]

log = get_logger(__name__)


def count_backlog(engine: sa.Engine) -> int:
    """Unpublished outbox rows, also set as the gauge; StoreError if the store fails."""
    try:
        with engine.connect() as conn:
            count = unpublished_count(conn)
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"counting the outbox backlog failed: {e}") from e
    RELAY_BACKLOG.set(count)
    return count


def count_backlog_until(engine: sa.Engine, stop: threading.Event, interval_s: float) -> None:
    """Set the gauge every ``interval_s`` until ``stop``; a failing count logs
    ``relay_backlog_unknown`` once until a count succeeds again."""
    failing = False
    while True:
        try:
            count_backlog(engine)
            failing = False
        except StoreError as e:
            if not failing:
                log.warning("relay_backlog_unknown", error=str(e))
            failing = True
        if stop.wait(interval_s):
            return
