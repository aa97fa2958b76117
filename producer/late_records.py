"""What a relay does about records it published after it had lost the relay lease.

Such a record (the relay was paused between its lease check and its produce) may land
after the new holder's newer version of the same key. Live regions refuse it (its fencing
epoch is older, ``workers.fencing``), but compaction keeps a key's last record, so a
region built later from the compacted topic would take the older version. The stale
relay learns its records were acknowledged when the store refuses its marking; it then
marks the newest outbox row of each of their keys unpublished again, so the lease holder
publishes that row once more, after them (a duplicate every region absorbs). Until then
the holder's heartbeats are held back to that row (``Relay.certified_ms``): regions only
stop getting fresher for a moment, they never look fresher than what they hold.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from producer.models import OUTBOX
from producer.outbox import Encoded
from shared.events import TokenEvent

__all__ = ["republish_newest"]

_CHUNK = 500


def republish_newest(conn: sa.Connection, late: Iterable[Encoded]) -> list[int]:
    """Mark the newest outbox row of each key in ``late`` unpublished; their seqs."""
    hashes: set[str] = set()
    scopes: set[str] = set()
    for item in late:
        if isinstance(item.event, TokenEvent):
            hashes.add(item.event.token_hash)
        else:
            scopes.add(item.event.scope)
    newest: list[int] = []
    for column, keys in ((OUTBOX.c.token_hash, hashes), (OUTBOX.c.scope, scopes)):
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            newest += [
                int(seq)
                for seq in conn.execute(
                    sa.select(sa.func.max(OUTBOX.c.seq)).where(column.in_(chunk)).group_by(column)
                ).scalars()
            ]
    newest.sort()
    for start in range(0, len(newest), _CHUNK):
        conn.execute(
            sa.update(OUTBOX)
            .where(
                OUTBOX.c.seq.in_(newest[start : start + _CHUNK]),
                OUTBOX.c.published_at_ms.is_not(None),
            )
            .values(published_at_ms=None, kafka_partition=None, kafka_offset=None)
        )
    return newest
