"""Reading the outbox in seq order, turning rows into events, marking them published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from producer.store import OUTBOX, to_ms
from producer.tokens import decode_abilities
from shared.events import EpochEvent, TokenEvent, TokenOp

__all__ = ["Published", "fetch_unpublished", "mark_published", "row_to_event", "unpublished_count"]


@dataclass(frozen=True, slots=True)
class Published:
    """One outbox row's fate: acknowledged at ``partition``/``offset`` at ``at_ms``."""

    seq: int
    partition: int
    offset: int
    at_ms: int


def fetch_unpublished(conn: sa.Connection, limit: int) -> list[sa.Row[tuple[object, ...]]]:
    """Up to ``limit`` unpublished rows, lowest seq first."""
    return list(
        conn.execute(
            sa.select(OUTBOX)
            .where(OUTBOX.c.published_at_ms.is_(None))
            .order_by(OUTBOX.c.seq)
            .limit(limit)
        ).all()
    )


def unpublished_count(conn: sa.Connection) -> int:
    """How many rows wait for the relay (the outbox backlog)."""
    count = conn.execute(
        sa.select(sa.func.count()).where(OUTBOX.c.published_at_ms.is_(None))
    ).scalar_one()
    return int(count)


def row_to_event(row: sa.Row[tuple[object, ...]]) -> TokenEvent | EpochEvent:
    """The event an outbox row stands for."""
    m = row._mapping
    seq = int(m["seq"])
    at_ms = int(m["recorded_at_ms"])
    if m["kind"] == "epoch":
        return EpochEvent(
            seq=seq, scope=str(m["scope"]), before_ms=int(m["before_ms"]), at_ms=at_ms
        )
    issued_at = int(m["issued_at_ms"] or 0)
    created = m["row_created_at"]
    expires = m["expires_at"]
    return TokenEvent(
        seq=seq,
        op=TokenOp(str(m["op"])),
        token_hash=str(m["token_hash"]),
        token_id=None if m["token_id"] is None else int(m["token_id"]),
        tokenable_type=str(m["tokenable_type"] or ""),
        tokenable_id=str(m["tokenable_id"] or ""),
        name=str(m["name"] or ""),
        abilities=decode_abilities(m["abilities"]),
        created_at_ms=to_ms(created) if created is not None else issued_at,
        issued_at_ms=issued_at,
        expires_at_ms=to_ms(expires) if expires is not None else None,
        at_ms=at_ms,
    )


_MARK_PUBLISHED_PG = sa.text(
    f"UPDATE {OUTBOX.name} AS o SET published_at_ms = placed.a, "  # noqa: S608 - a constant
    "kafka_partition = placed.p, kafka_offset = placed.o "
    "FROM unnest(CAST(:seqs AS bigint[]), CAST(:parts AS integer[]), "
    "CAST(:offs AS bigint[]), CAST(:ats AS bigint[])) AS placed(s, p, o, a) "
    "WHERE o.seq = placed.s"
)


def mark_published(conn: sa.Connection, published: Sequence[Published]) -> None:
    """Record partition, offset and time of acknowledged rows (one statement on PostgreSQL)."""
    if not published:
        return
    if conn.dialect.name == "postgresql":
        # One statement with four array parameters: it compiles once and is cached, where a
        # VALUES list of 2,000 rows would be compiled anew for every batch (~0.3 s).
        conn.execute(
            _MARK_PUBLISHED_PG,
            {
                "seqs": [p.seq for p in published],
                "parts": [p.partition for p in published],
                "offs": [p.offset for p in published],
                "ats": [p.at_ms for p in published],
            },
        )
        return
    conn.execute(
        OUTBOX.update()
        .where(OUTBOX.c.seq == sa.bindparam("b_seq"))
        .values(
            published_at_ms=sa.bindparam("b_at"),
            kafka_partition=sa.bindparam("b_partition"),
            kafka_offset=sa.bindparam("b_offset"),
        ),
        [
            {"b_seq": p.seq, "b_at": p.at_ms, "b_partition": p.partition, "b_offset": p.offset}
            for p in published
        ],
    )
