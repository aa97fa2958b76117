"""The audit trail: who did what to the token store, when, why, and which seq it produced.

The store writes one record per mutation inside the mutation's own transaction
(``begin`` hides the change from the ``sql`` audit trigger, ``record`` writes the
entry); rows a Laravel app writes with plain SQL are recorded by that trigger
(``producer.audit_triggers``) as actor ``sql``. Records are never updated or
deleted; a revocation's receipt is attached in a table of its own once complete.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from producer import triggers_mysql, txmarks
from producer.audit_context import ActorKind, AuditContext, has_reason
from producer.models import AUDIT, RECEIPTS
from shared.errors import UsageError
from shared.timeparse import parse_duration, parse_instant

__all__ = [
    "ActorKind",
    "AuditContext",
    "AuditEntry",
    "attach_complete_receipt",
    "attach_receipt",
    "begin",
    "by_seq",
    "has_reason",
    "parse_since",
    "read",
    "record",
]


@dataclass(frozen=True)
class AuditEntry:
    """One audit record as readers see it (with its receipt, once attached)."""

    id: int
    at_ms: int
    actor_kind: str
    actor: str
    action: str
    scope: str | None
    token_id: int | None
    tokenable_type: str | None
    tokenable_id: str | None
    seq: int | None
    removed: int | None
    reason: str | None
    request_id: str | None
    detail: Mapping[str, Any] | None
    receipt: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "actor_kind": self.actor_kind,
            "actor": self.actor,
            "action": self.action,
            "scope": self.scope,
            "token_id": self.token_id,
            "tokenable_type": self.tokenable_type,
            "tokenable_id": self.tokenable_id,
            "seq": self.seq,
            "removed": self.removed,
            "reason": self.reason,
            "request_id": self.request_id,
            "detail": self.detail,
            "receipt": self.receipt,
        }


def begin(conn: sa.Connection) -> int:
    """Hide this transaction's changes from the ``sql`` audit trigger; ``record`` ends it
    (a mark of this transaction only: ``producer.txmarks``)."""
    return txmarks.mark(conn, txmarks.AUDIT)


def record(
    conn: sa.Connection,
    marker: int,
    context: AuditContext,
    *,
    action: str,
    seq: int | None,
    scope: str | None = None,
    token_id: int | None = None,
    principal: tuple[str, int | str] | None = None,
    removed: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Write the audit record of this transaction's change; returns its id."""
    txmarks.unmark(conn, txmarks.AUDIT, marker)
    values = {
        "actor_kind": context.kind.value,
        "actor": context.actor,
        "action": action,
        "scope": scope,
        "token_id": token_id,
        "tokenable_type": principal[0] if principal else None,
        "tokenable_id": str(principal[1]) if principal else None,
        "seq": seq or None,
        "removed": removed,
        "reason": context.reason,
        "request_id": context.request_id,
        "detail": json.dumps(dict(detail), sort_keys=True) if detail else None,
    }
    # inserted_primary_key: RETURNING where the database has it, else the driver's
    # last insert id (MySQL 8 has no RETURNING).
    key = conn.execute(_insert(conn.dialect.name), values).inserted_primary_key
    return int(cast(Any, key)[0])


_SQLITE_NOW_MS = (
    "CAST(strftime('%s','now') AS INTEGER) * 1000"
    " + CAST(substr(strftime('%f','now'), 4) AS INTEGER)"
)


@functools.cache
def _insert(dialect: str) -> sa.Insert:
    """The audit insert of ``dialect``, stamped with the database's clock (built once)."""
    now: sa.ColumnElement[int] = (
        sa.func.tokensync_now_ms()
        if dialect == "postgresql"
        else sa.literal_column(triggers_mysql.NOW_MS, sa.BigInteger())
        if dialect in triggers_mysql.DIALECTS
        else sa.literal_column(_SQLITE_NOW_MS, sa.BigInteger())
    )
    return AUDIT.insert().values(at_ms=now)


def attach_receipt(
    engine: sa.Engine, audit_id: int, receipt: Mapping[str, Any], at_ms: int
) -> bool:
    """Attach a complete receipt to audit record ``audit_id`` (once; later calls keep
    the first, concurrent ones too: one insert that does nothing on the key). Returns
    whether this call attached it."""
    body = json.dumps(dict(receipt), sort_keys=True)
    if engine.dialect.name in triggers_mysql.DIALECTS:
        return _attach_receipt_mysql(engine, audit_id, body, at_ms)
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(RECEIPTS)
        .values(audit_id=audit_id, at_ms=at_ms, receipt=body)
        .on_conflict_do_nothing(index_elements=[RECEIPTS.c.audit_id])
    )
    with engine.begin() as conn:
        return bool(conn.execute(statement).rowcount == 1)


_MYSQL_DUPLICATE_KEY = 1062


def _attach_receipt_mysql(engine: sa.Engine, audit_id: int, body: str, at_ms: int) -> bool:
    """``attach_receipt`` on MySQL/MariaDB: a plain insert, and a duplicate key (an earlier
    or concurrent attach) means "not this call". Neither INSERT IGNORE (it would ignore
    other errors too) nor ON DUPLICATE KEY UPDATE (PyMySQL's found-rows count reports an
    unchanged row as 1) tells the two apart as cleanly."""
    try:
        with engine.begin() as conn:
            conn.execute(RECEIPTS.insert().values(audit_id=audit_id, at_ms=at_ms, receipt=body))
    except sa.exc.IntegrityError as e:
        if getattr(e.orig, "args", (None,))[0] == _MYSQL_DUPLICATE_KEY:
            return False
        raise
    return True


class _Receipt(Protocol):
    @property
    def complete(self) -> bool: ...
    def to_json(self) -> dict[str, Any]: ...
    def summary(self) -> str: ...


def attach_complete_receipt(engine: sa.Engine, audit_id: int | None, receipt: _Receipt) -> bool:
    """Attach ``receipt`` to its revocation's audit record if it is complete."""
    if audit_id is None or not receipt.complete:
        return False
    body = {**receipt.to_json(), "summary": receipt.summary()}
    return attach_receipt(engine, audit_id, body, int(time.time() * 1000))


def read(
    engine: sa.Engine,
    *,
    since_ms: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 1000,
) -> list[AuditEntry]:
    """Audit records, oldest first: since a time, by actor (exact, or its kind: ``sql``,
    ``cli``, ``api``, ``python``), by action; at most ``limit`` (the newest ones)."""
    if limit < 1:
        raise UsageError("limit must be at least 1")
    query = sa.select(AUDIT, RECEIPTS.c.receipt).select_from(
        AUDIT.outerjoin(RECEIPTS, RECEIPTS.c.audit_id == AUDIT.c.id)
    )
    if since_ms is not None:
        query = query.where(AUDIT.c.at_ms >= since_ms)
    if actor:
        query = query.where(
            (AUDIT.c.actor == actor)
            | (AUDIT.c.actor_kind == actor)
            | AUDIT.c.actor.like(
                actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%",
                escape="\\",
            )
        )
    if action:
        query = query.where(AUDIT.c.action == action)
    query = query.order_by(AUDIT.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_entry(r._mapping) for r in reversed(rows)]


def by_seq(engine: sa.Engine, seq: int) -> list[AuditEntry]:
    """The audit records of the change that produced outbox seq ``seq``."""
    query = (
        sa.select(AUDIT, RECEIPTS.c.receipt)
        .select_from(AUDIT.outerjoin(RECEIPTS, RECEIPTS.c.audit_id == AUDIT.c.id))
        .where(AUDIT.c.seq == seq)
        .order_by(AUDIT.c.id)
    )
    with engine.connect() as conn:
        return [_entry(r._mapping) for r in conn.execute(query).all()]


def parse_since(text: str) -> int:
    """Epoch milliseconds from ``--since``: a duration back from now (90s, 15m, 1h, 7d)
    or a time (ISO 8601, Unix seconds)."""
    try:
        seconds = parse_duration(text)
    except UsageError:
        instant = parse_instant(text)
        if instant is None:
            return int(time.time() * 1000)
        return int(instant.timestamp() * 1000)
    return int((time.time() - seconds) * 1000)


def _entry(m: sa.RowMapping) -> AuditEntry:
    return AuditEntry(
        id=int(m["id"]),
        at_ms=int(m["at_ms"]),
        actor_kind=str(m["actor_kind"]),
        actor=str(m["actor"]),
        action=str(m["action"]),
        scope=m["scope"],
        token_id=m["token_id"],
        tokenable_type=m["tokenable_type"],
        tokenable_id=m["tokenable_id"],
        seq=m["seq"],
        removed=m["removed"],
        reason=m["reason"],
        request_id=m["request_id"],
        detail=json.loads(m["detail"]) if m["detail"] else None,
        receipt=json.loads(m["receipt"]) if m["receipt"] else None,
    )
