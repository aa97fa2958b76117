"""What every part of the token store shares: the engine, the principal column, one
write transaction with the store's errors, the database clock, the newest outbox seq,
and the audit record of a mutation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from producer import audit as audit_log
from producer.audit import AuditContext
from producer.clock import db_now_ms
from producer.models import OUTBOX
from producer.principals import PrincipalColumn
from producer.records import Mutation
from producer.schema import write_transaction
from shared import tracing
from shared.errors import StoreError

__all__ = ["StoreCore"]


class StoreCore:
    """The state and helpers the token, epoch, region and outbox parts build on."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        token_prefix: str = "",
        expiration_minutes: int | None = None,
    ) -> None:
        self.engine = engine
        self.token_prefix = token_prefix
        self.expiration_minutes = expiration_minutes
        self._dialect = engine.dialect.name
        self._principals = PrincipalColumn(engine)

    def owner_id(self, tokenable_id: int | str) -> int | str:
        """A principal id as the table holds it: a whole number for Sanctum's BIGINT
        column, a string for Laravel's uuidMorphs/ulidMorphs (string or uuid) columns."""
        return self._principals.owner_id(tokenable_id)

    def owner_match(self, owner: int | str) -> sa.ColumnElement[bool]:
        """Rows whose tokenable_id is ``owner`` (from ``owner_id``), UUIDs in any case."""
        return self._principals.match(owner)

    def owner_value(self, owner: int | str) -> Any:
        """``owner`` as a bound value typed like the table's tokenable_id column."""
        return self._principals.value(owner)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        tracing.store_began()
        try:
            with write_transaction(self.engine) as conn:
                yield conn
        except sa.exc.IntegrityError as e:
            raise StoreError(f"the token store refused the change: {e.orig}") from e
        except sa.exc.OperationalError as e:
            raise StoreError(f"the token store is unreachable: {e.orig}") from e

    @staticmethod
    def now_ms(conn: sa.Connection) -> int:
        """The database's clock in milliseconds (the clock the triggers stamp tokens with)."""
        return db_now_ms(conn)

    @staticmethod
    def _last_seq(conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
        seq = conn.execute(sa.select(sa.func.max(OUTBOX.c.seq)).where(where)).scalar_one()
        return int(seq or 0)

    @staticmethod
    def _audited(
        conn: sa.Connection,
        marker: int,
        audit: AuditContext | None,
        action: str,
        *,
        seq: int | None,
        scope: str | None,
        token_id: int | None = None,
        principal: tuple[str, int | str] | None = None,
        removed: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """The audit record of this transaction's change (the one path every mutation of
        the store takes; calls without a context are the Python API's); its id."""
        tracing.store_mutation(action, seq)
        return audit_log.record(
            conn,
            marker,
            audit or AuditContext.python(),
            action=action,
            seq=seq,
            scope=scope,
            token_id=token_id,
            principal=principal,
            removed=removed,
            detail=detail,
        )

    def _audited_mutation(  # noqa: PLR0917 (private: one call per mutation)
        self,
        conn: sa.Connection,
        marker: int,
        audit: AuditContext | None,
        action: str,
        mutation: Mutation,
        principal: tuple[str, int | str] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Mutation:
        """``_audited`` for a revocation's outcome: its seq, scope, rows and epoch time."""
        if mutation.before_ms is not None:
            detail = {**(detail or {}), "before_ms": mutation.before_ms}
        audit_id = self._audited(
            conn,
            marker,
            audit,
            action,
            seq=mutation.seq,
            scope=mutation.scope,
            principal=principal,
            removed=mutation.removed,
            detail=detail,
        )
        return replace(mutation, audit_id=audit_id)
