"""What a relay does about records it published after it had lost the relay lease.

Such a record (the relay was paused between its lease check and its produce) may land
after the new holder's newer version of the same key. Live regions refuse it (its fencing
epoch is older, ``workers.fencing``), but compaction keeps a key's last record, so a
region built later from the compacted topic would take the older version. The stale
relay learns its records were acknowledged when the store refuses its marking; it then
marks the newest outbox row of each of their keys unpublished again, so the lease holder
publishes that row once more, after them (a duplicate every region absorbs). A newest row
still unpublished may be in flight with the holder (produced before the late records
landed, marked after): the stale relay waits for its marking and then unmarks it too. Until then
the holder's heartbeats are held back to that row (``Relay.certified_ms``): regions only
stop getting fresher for a moment, they never look fresher than what they hold.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from producer.models import OUTBOX
from producer.outbox import Encoded
from shared.events import TokenEvent

__all__ = ["republish_newest", "republish_newest_or_pending"]

_CHUNK = 500


def republish_newest(conn: sa.Connection, late: Iterable[Encoded]) -> list[int]:
    """Mark the newest outbox row of each key in ``late`` unpublished; their seqs."""
    return republish_newest_or_pending(conn, late)[0]


def _key(item: Encoded) -> tuple[bool, str]:
    event = item.event
    return (True, event.token_hash) if isinstance(event, TokenEvent) else (False, event.scope)


def republish_newest_or_pending(
    conn: sa.Connection, late: Iterable[Encoded]
) -> tuple[list[int], list[Encoded]]:
    """Mark the newest outbox row of each key in ``late`` unpublished; their seqs, and the
    items of ``late`` whose key's newest row was unpublished already.

    Such a row may be in flight with the holder, produced BEFORE the late records landed
    and marked after: it must be marked unpublished again once the holder marked it, so
    the caller retries those items (``Relay._published_late``)."""
    late = list(late)
    hashes = {k for is_token, k in map(_key, late) if is_token}
    scopes = {k for is_token, k in map(_key, late) if not is_token}
    newest: dict[int, tuple[bool, str]] = {}
    for is_token, column, keys in (
        (True, OUTBOX.c.token_hash, hashes),
        (False, OUTBOX.c.scope, scopes),
    ):
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            query = sa.select(sa.func.max(OUTBOX.c.seq), column).where(column.in_(chunk))
            for seq, key in conn.execute(query.group_by(column)).all():
                newest[int(seq)] = (is_token, str(key))
    seqs = sorted(newest)
    unpublished: set[int] = set()
    for start in range(0, len(seqs), _CHUNK):
        some = seqs[start : start + _CHUNK]
        unpublished |= {
            int(seq)
            for seq in conn.execute(
                sa.select(OUTBOX.c.seq).where(
                    OUTBOX.c.seq.in_(some), OUTBOX.c.published_at_ms.is_(None)
                )
            ).scalars()
        }
        conn.execute(
            sa.update(OUTBOX)
            .where(OUTBOX.c.seq.in_(some), OUTBOX.c.published_at_ms.is_not(None))
            .values(published_at_ms=None, kafka_partition=None, kafka_offset=None)
        )
    waiting = {newest[seq] for seq in unpublished}
    return seqs, [item for item in late if _key(item) in waiting]
