"""Marks that belong to one transaction: "tokensync itself writes this, stay silent".

Two triggers must tell tokensync's own transactions from plain SQL: the delete trigger
publishes nothing while a mass revocation deletes the rows its epoch already revokes
(``tokensync_suppress``), and the audit trigger records nothing while the store writes
its own audit record (``tokensync_audit_marker``). A mark must silence the transaction
that made it and nothing else: a row someone commits into one of those tables (a Laravel
app, an injection in it, a manual fix-up with the same database user) silences nothing.

- PostgreSQL: the mark is a row whose ``id`` is the transaction's ``txid_current()``
  and whose ``xmin`` (the transaction that wrote it, which no one can choose) is that
  same transaction; the triggers compare both (``pg_marked``). A committed row names a
  finished transaction, and a row naming a future txid has the wrong ``xmin``.
- SQLite: a trigger can only see the main schema, and SQLite has no transaction id, so
  nothing a trigger reads can tell this transaction's rows from committed ones. The
  triggers therefore always write, and the store's transactions, which hold SQLite's one
  write lock from their first statement (``BEGIN IMMEDIATE``), take back before commit
  what the triggers wrote for them: everything above the position noted at ``mark`` is
  theirs. The AUTOINCREMENT counters are set back too, so no reader ever sees a gap.
- MySQL/MariaDB: a trigger cannot read the transaction's id without the PROCESS
  privilege, but it reads the session's user variables. The mark is a fresh random
  per-transaction token, written both as a row of the marker table (in the
  transaction: it vanishes on rollback) and into the session variable ``@<table>``; the
  triggers (``mysql_marked``) want both. A committed row names no session's token (the
  tokens are never shown), another session's variable is invisible, and a variable left
  behind by a rolled-back transaction names no row.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa

__all__ = ["AUDIT", "SUPPRESS", "Mark", "mark", "mysql_marked", "pg_marked", "unmark"]

SUPPRESS = "tokensync_suppress"
AUDIT = "tokensync_audit_marker"

#: On SQLite, what a mark takes back at ``unmark``: (table, key column, rows of ours).
_SQLITE_TAKE_BACK = {
    SUPPRESS: ("tokensync_outbox", "seq", "kind = 'token' AND op = 'revoked'"),
    AUDIT: ("tokensync_audit", "id", "actor_kind = 'sql'"),
}

Mark = int

_MYSQL = frozenset({"mysql", "mariadb"})


def pg_marked(table: str) -> str:
    """SQL (PostgreSQL, for a trigger): whether the current transaction holds a mark."""
    return (
        f"EXISTS (SELECT 1 FROM {table} tm WHERE tm.id = txid_current()"  # noqa: S608
        " AND tm.xmin = (txid_current() % 4294967296)::text::xid)"
    )


def mysql_marked(table: str) -> str:
    """SQL (MySQL/MariaDB, for a trigger): whether the current transaction holds a mark."""
    return (
        f"(@{table} IS NOT NULL AND EXISTS"  # noqa: S608 - constant
        f" (SELECT 1 FROM {table} tm WHERE tm.id = @{table}))"
    )


def mark(conn: sa.Connection, table: str) -> Mark:
    """Mark the current transaction in ``table``; ``unmark`` ends it."""
    if conn.dialect.name == "postgresql":
        return int(
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} (id) VALUES (txid_current())"  # noqa: S608 - constant
                    " ON CONFLICT (id) DO NOTHING RETURNING id"
                )
            ).scalar_one_or_none()
            or conn.execute(sa.text("SELECT txid_current()")).scalar_one()
        )
    if conn.dialect.name in _MYSQL:
        token = secrets.randbelow(2**62) + 1
        conn.execute(
            sa.text(f"INSERT INTO {table} (id) VALUES (:t)"),  # noqa: S608 - constant
            {"t": token},
        )
        conn.execute(sa.text(f"SET @{table} = :t"), {"t": token})
        return token
    target, key, _ours = _SQLITE_TAKE_BACK[table]
    position = conn.execute(
        sa.text(f"SELECT coalesce(max({key}), 0) FROM {target}")  # noqa: S608 - constants
    ).scalar_one()
    return int(position)


def unmark(conn: sa.Connection, table: str, marker: Mark) -> None:
    """End the mark: the triggers see this transaction's later writes as plain SQL again
    (on SQLite: take back what they wrote since ``mark``)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(f"DELETE FROM {table} WHERE id = :m"),  # noqa: S608 - constant
            {"m": marker},
        )
        return
    if conn.dialect.name in _MYSQL:
        conn.execute(sa.text(f"SET @{table} = NULL"))
        conn.execute(
            sa.text(f"DELETE FROM {table} WHERE id = :m"),  # noqa: S608 - constant
            {"m": marker},
        )
        return
    target, key, ours = _SQLITE_TAKE_BACK[table]
    taken = conn.execute(
        sa.text(f"DELETE FROM {target} WHERE {key} > :m AND {ours}"),  # noqa: S608
        {"m": marker},
    ).rowcount
    if taken:
        conn.execute(
            sa.text(
                "UPDATE sqlite_sequence SET seq ="  # noqa: S608 - constants
                f" (SELECT coalesce(max({key}), 0) FROM {target}) WHERE name = :t"
            ),
            {"t": target},
        )
