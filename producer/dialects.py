"""Where the store's SQL differs by database: SQLite, PostgreSQL, MySQL/MariaDB.

Each function takes the connection (or dialect name) and picks its branch, so the token
and epoch code reads the same on every database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg

from producer import triggers_mysql, txmarks
from producer.models import EPOCHS, PAT
from producer.tokens import encode_abilities
from shared.errors import UsageError

__all__ = ["check_abilities_fit", "delete_quietly", "lock_writers", "raise_epoch"]

_MYSQL_TEXT_BYTES = 65_535
_DELETE_CHUNK = 1000


def check_abilities_fit(dialect: str, granted: tuple[str, ...]) -> None:
    """On MySQL/MariaDB Sanctum's ``abilities`` column is TEXT: 65,535 bytes of JSON at
    most (SQLite and PostgreSQL have no such bound). Refused before anything is written."""
    if dialect not in triggers_mysql.DIALECTS:
        return
    size = len(encode_abilities(granted).encode("utf-8"))
    if size > _MYSQL_TEXT_BYTES:
        raise UsageError(
            f"the abilities take {size} bytes as JSON; the store's abilities column"
            f" (MySQL/MariaDB TEXT) holds at most {_MYSQL_TEXT_BYTES}"
        )


def lock_writers(conn: sa.Connection) -> None:
    """Wait for every transaction writing token rows, and hold them off until commit.

    On PostgreSQL a row inserted before the epoch's time but committed after the
    delete would survive in the store while the regions deny it; SHARE ROW EXCLUSIVE
    waits for those writers (they hold ROW EXCLUSIVE) and serialises mass revocations.
    On MySQL/MariaDB ``delete_quietly`` picks the rows by a locking read, which waits
    for every uncommitted insert it meets (a row stamped before the epoch's time is in
    the index before the clock is read). On SQLite the store's write transaction holds
    the database's one write lock from its first statement (``BEGIN IMMEDIATE``), so
    nothing commits between what it reads and what it writes.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"LOCK TABLE {PAT.name} IN SHARE ROW EXCLUSIVE MODE"))


def raise_epoch(conn: sa.Connection, scope: str, before_ms: int, now_ms: int) -> int:
    """Move the epoch of ``scope`` forward to ``before_ms`` (never back); its value now."""
    dialect = conn.dialect.name
    if dialect in triggers_mysql.DIALECTS:
        upsert = mysql.insert(EPOCHS).values(scope=scope, before_ms=before_ms, updated_at_ms=now_ms)
        stmt: sa.Executable = upsert.on_duplicate_key_update(
            before_ms=sa.func.greatest(EPOCHS.c.before_ms, upsert.inserted.before_ms),
            updated_at_ms=now_ms,
        )
    else:
        insert = (pg.insert if dialect == "postgresql" else sqlite.insert)(EPOCHS)
        values = insert.values(scope=scope, before_ms=before_ms, updated_at_ms=now_ms)
        newest = sa.func.greatest if dialect == "postgresql" else sa.func.max
        stmt = values.on_conflict_do_update(
            index_elements=[EPOCHS.c.scope],
            set_={
                "before_ms": newest(EPOCHS.c.before_ms, values.excluded.before_ms),
                "updated_at_ms": now_ms,
            },
        )
    conn.execute(stmt)
    return int(
        conn.execute(sa.select(EPOCHS.c.before_ms).where(EPOCHS.c.scope == scope)).scalar_one()
    )


def delete_quietly(conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
    """Delete the token rows ``where`` selects without per-row outbox events (an epoch
    carries them); how many went. On MySQL/MariaDB the rows are chosen first by a locking
    read (a DELETE may not read tokensync_token_meta, which its trigger writes)."""
    if conn.dialect.name not in triggers_mysql.DIALECTS:
        marker = txmarks.mark(conn, txmarks.SUPPRESS)
        removed = conn.execute(PAT.delete().where(where)).rowcount
        txmarks.unmark(conn, txmarks.SUPPRESS, marker)
        return removed
    ids = list(conn.execute(sa.select(PAT.c.id).where(where).with_for_update()).scalars())
    marker = txmarks.mark(conn, txmarks.SUPPRESS)
    removed = 0
    for start in range(0, len(ids), _DELETE_CHUNK):
        chunk = ids[start : start + _DELETE_CHUNK]
        removed += conn.execute(PAT.delete().where(PAT.c.id.in_(chunk))).rowcount
    txmarks.unmark(conn, txmarks.SUPPRESS, marker)
    return removed
