"""``tokensync store repair``: reinstall missing outbox triggers and cover the blind window.

While a trigger was missing, inserts, updates and deletes of token rows reached no
region. Rows inserted meanwhile lack their meta row and are published by the
backfill; deletions and changes left no trace, so the only safe cover is a global
epoch at the repair's time (every token issued before it is revoked, in the store
and in every region): users sign in again. ``skip_epoch`` is for an operator who
knows that no token was deleted or changed while the triggers were missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from producer import audit_triggers, triggers
from producer.audit import AuditContext
from producer.backfill import backfill, mark_pending
from producer.records import Mutation
from producer.store import TokenStore
from producer.trigger_check import missing_triggers
from shared.errors import StoreError

__all__ = ["RepairResult", "missing", "repair"]


@dataclass(frozen=True)
class RepairResult:
    """What a repair did."""

    reinstalled: tuple[str, ...]
    backfilled: int
    epoch: Mutation | None

    def to_json(self) -> dict[str, Any]:
        """The JSON form the CLI prints."""
        return {
            "reinstalled": list(self.reinstalled),
            "backfilled": self.backfilled,
            "epoch": self.epoch.to_json() if self.epoch is not None else None,
        }


def missing(store: TokenStore) -> list[str]:
    """The outbox triggers that are not in place (``table.trigger``)."""
    try:
        with store.engine.connect() as conn:
            return missing_triggers(conn)
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"reading the store's triggers failed: {e}") from e


def repair(store: TokenStore, *, skip_epoch: bool, audit: AuditContext) -> RepairResult:
    """Reinstall the triggers (all of them, idempotently), publish rows inserted while
    they were missing, then (unless ``skip_epoch``) revoke everything issued before now."""
    gone = missing(store)
    dialect = store.engine.dialect.name
    try:
        with store.engine.begin() as conn:
            for statement in triggers.install_statements(dialect):
                conn.execute(sa.text(statement))
            for statement in audit_triggers.install_statements(dialect):
                conn.execute(sa.text(statement))
            pending = mark_pending(conn)
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"reinstalling the triggers failed: {e}") from e
    backfilled = backfill(store.engine).rows if pending else 0
    epoch = None if skip_epoch else store.revoke_all(audit=audit)
    return RepairResult(tuple(gone), backfilled, epoch)
