"""Outbox positions: where the relay put an outbox row (partition and offset once Kafka
acknowledged it), which receipts and the region integrity check start from."""

from __future__ import annotations

import sqlalchemy as sa

from producer.models import OUTBOX
from producer.records import OutboxPosition
from producer.store_core import StoreCore
from shared.errors import NotFoundError

__all__ = ["Positions"]


class Positions(StoreCore):
    """The store's view of the outbox by seq."""

    def position(self, seq: int) -> OutboxPosition:
        """Where outbox row ``seq`` went (partition and offset once published)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(OUTBOX).where(OUTBOX.c.seq == seq)).first()
        if row is None:
            raise NotFoundError(f"no outbox record with seq {seq}")
        m = row._mapping
        return OutboxPosition(
            seq=seq,
            kind=str(m["kind"]),
            key=str(m["scope"] if m["kind"] == "epoch" else m["token_hash"]),
            partition=m["kafka_partition"],
            offset=m["kafka_offset"],
            recorded_at_ms=int(m["recorded_at_ms"]),
            published_at_ms=m["published_at_ms"],
        )
