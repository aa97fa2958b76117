"""Applying usage reports to ``last_used_at``, in batches, never on the request path.

Regions forward what their validators saw (``shared.usage``) to the usage
topic; this applier moves ``last_used_at`` forward only (an update that touches
only ``last_used_at``/``updated_at`` publishes nothing: the triggers skip it).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa

from producer.store import PAT
from shared.errors import PublishError
from shared.logs import get_logger

if TYPE_CHECKING:  # only the relay process needs kafka; this module stays importable without it
    from producer.kafka_io import UsageConsumer

__all__ = ["UsageApplier", "apply_usage", "merge_reports"]

log = get_logger(__name__)


def merge_reports(values: Iterable[bytes]) -> dict[int, int]:
    """Newest use per token id across several region reports; malformed ones are skipped."""
    merged: dict[int, int] = {}
    for value in values:
        try:
            report = orjson.loads(value)
            usage = {int(k): int(v) for k, v in report["usage"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("usage_report_skipped")
            continue
        for token_id, at in usage.items():
            if merged.get(token_id, 0) < at:
                merged[token_id] = at
    return merged


def apply_usage(engine: sa.Engine, usage: dict[int, int]) -> int:
    """Move ``last_used_at`` forward for every token in ``usage``; return rows updated."""
    if not usage:
        return 0
    rows = [
        {
            "u_id": token_id,
            "u_at": dt.datetime.fromtimestamp(at / 1000, dt.UTC).replace(
                tzinfo=None, microsecond=0
            ),
        }
        for token_id, at in usage.items()
    ]
    stmt = (
        PAT.update()
        .where(PAT.c.id == sa.bindparam("u_id"))
        .where(sa.or_(PAT.c.last_used_at.is_(None), PAT.c.last_used_at < sa.bindparam("u_at")))
        .values(last_used_at=sa.bindparam("u_at"))
    )
    with engine.begin() as conn:
        result = conn.execute(stmt, rows)
    return int(result.rowcount or 0)


class UsageApplier:
    """Consumes the usage topic and applies it to the store until stopped."""

    def __init__(self, engine: sa.Engine, connect: Callable[[], UsageConsumer]) -> None:
        self._engine = engine
        self._connect = connect

    def run(self, stop: threading.Event) -> None:
        """Loop: poll, apply, commit; reconnect with backoff on errors."""
        consumer: UsageConsumer | None = None
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                values = consumer.poll(1.0)
                if values:
                    updated = apply_usage(self._engine, merge_reports(values))
                    consumer.commit()
                    log.info("usage_applied", reports=len(values), rows=updated)
            except (PublishError, sa.exc.SQLAlchemyError) as e:
                log.warning("usage_retrying", error=str(e))
                if consumer is not None:
                    consumer.close()
                    consumer = None
                stop.wait(1.0)
        if consumer is not None:
            consumer.close()
