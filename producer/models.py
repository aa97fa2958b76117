"""SQLAlchemy 2 models: Sanctum's ``personal_access_tokens`` and tokensync's own tables.

``personal_access_tokens`` matches Sanctum 4.x's migration column for column,
so a Laravel application can share it. The ``tokensync_*`` tables hold the
outbox (filled by triggers, see ``producer.triggers``), revocation epochs,
per-token issue times and the registered regions.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from producer.store_zone import from_store, to_store, zone_of

__all__ = [
    "AUDIT",
    "EPOCHS",
    "META",
    "OUTBOX",
    "PAT",
    "RECEIPTS",
    "REGIONS",
    "STATE",
    "AuditMarker",
    "AuditReceipt",
    "AuditRecord",
    "Base",
    "Epoch",
    "OutboxRow",
    "PersonalAccessToken",
    "RegionRow",
    "StateRow",
    "Suppression",
    "TokenMeta",
]


class _Timestamp(sa.TypeDecorator[dt.datetime]):
    """Naive UTC in Python; in the table, naive wall-clock time of the store's zone
    (``producer.store_zone``, UTC unless TOKENSYNC_STORE_TIMEZONE says otherwise)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(
                SQLITE_DATETIME(  # type: ignore[no-untyped-call]
                    storage_format=(
                        "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"
                    ),
                    regexp=r"(\d+)-(\d+)-(\d+)(?:[ T](\d+):(\d+):(\d+))?",
                )
            )
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.TIMESTAMP())
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, dt.datetime):
            return to_store(value, zone_of(dialect))
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, dt.datetime):
            return from_store(value, zone_of(dialect))
        return value


# Laravel writes timestamps as 'Y-m-d H:i:s' (its app.timezone, UTC by default); on SQLite
# we store them the same way. On MySQL/MariaDB Laravel's migration creates ``timestamp``
# columns (stored in UTC, read and written in the session's time zone; ours is UTC).
Timestamp = _Timestamp()

# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere the key is a BIGINT
# (on MySQL/MariaDB ``bigint unsigned``, as Laravel's ``id()`` and ``morphs()`` make it).
BigIntKey = (
    sa.BigInteger()
    .with_variant(sa.Integer(), "sqlite")
    .with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")
)
UnsignedBigInt = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base of every tokensync table."""


class PersonalAccessToken(Base):
    """Sanctum's token table, exactly as its 4.x migration creates it."""

    __tablename__ = "personal_access_tokens"
    __table_args__ = (
        sa.Index(
            "personal_access_tokens_tokenable_type_tokenable_id_index",
            "tokenable_type",
            "tokenable_id",
        ),
        sa.Index("personal_access_tokens_expires_at_index", "expires_at"),
        sa.UniqueConstraint("token", name="personal_access_tokens_token_unique"),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    tokenable_type: Mapped[str] = mapped_column(sa.String(255))
    tokenable_id: Mapped[int] = mapped_column(UnsignedBigInt)
    name: Mapped[str] = mapped_column(sa.Text)
    token: Mapped[str] = mapped_column(sa.String(64))
    abilities: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class OutboxRow(Base):
    """One change to publish, written by a trigger in the same transaction as the change.

    ``seq`` is the version regions compare; ``kafka_partition``/``kafka_offset`` are
    filled in when the broker acknowledged the record (receipts need them).
    """

    __tablename__ = "tokensync_outbox"
    __table_args__ = (
        sa.Index("tokensync_outbox_unpublished", "published_at_ms", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # token | epoch
    op: Mapped[str] = mapped_column(sa.String(16))  # issued | updated | revoked | epoch
    token_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    token_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    tokenable_type: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    tokenable_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    abilities: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    row_created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    issued_at_ms: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    scope: Mapped[str | None] = mapped_column(sa.String(600), nullable=True)
    before_ms: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    recorded_at_ms: Mapped[int] = mapped_column(sa.BigInteger)
    published_at_ms: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    kafka_partition: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    kafka_offset: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)


class Epoch(Base):
    """A revocation epoch: tokens of ``scope`` issued before ``before_ms`` are revoked."""

    __tablename__ = "tokensync_epochs"

    scope: Mapped[str] = mapped_column(sa.String(600), primary_key=True)
    before_ms: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(sa.BigInteger)


class TokenMeta(Base):
    """When each token row was inserted, to the millisecond (Sanctum's ``created_at``
    has whole seconds; epochs need finer). Written by the insert trigger."""

    __tablename__ = "tokensync_token_meta"

    token_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    issued_at_ms: Mapped[int] = mapped_column(sa.BigInteger)


class Suppression(Base):
    """A mass revocation's mark (PostgreSQL: its txid; ``producer.txmarks``): while its
    transaction holds one, deletes publish nothing, as the epoch written in the same
    transaction already revokes those tokens. A row of another transaction counts for nothing."""

    __tablename__ = "tokensync_suppress"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)


class RegionRow(Base):
    """A registered region: a name and its Redis URL."""

    __tablename__ = "tokensync_regions"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    redis_url: Mapped[str] = mapped_column(sa.String(1024))
    added_at_ms: Mapped[int] = mapped_column(sa.BigInteger)


class StateRow(Base):
    """Named facts about the store's installation, e.g. since when a backfill is pending
    (``backfill_pending_since_ms``: rows older than tokensync not yet in the outbox)."""

    __tablename__ = "tokensync_state"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value_ms: Mapped[int] = mapped_column(sa.BigInteger)


class AuditRecord(Base):
    """One act on the token store: who, what, which scope, the outbox seq, why.

    Written in the same transaction as the change (by the store for its own writes, by
    a trigger as actor ``sql`` for rows written with plain SQL); never updated or
    deleted by tokensync, and never holding a plaintext token.
    """

    __tablename__ = "tokensync_audit"
    __table_args__ = (
        sa.Index("tokensync_audit_at", "at_ms"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(sa.BigInteger)
    actor_kind: Mapped[str] = mapped_column(sa.String(16))  # api | cli | python | sql
    actor: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(32))
    scope: Mapped[str | None] = mapped_column(sa.String(600), nullable=True)
    token_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    tokenable_type: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    tokenable_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    removed: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    detail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class AuditReceipt(Base):
    """The receipt of a revocation, attached to its audit record once complete (insert-only:
    the audit record itself stays as written)."""

    __tablename__ = "tokensync_audit_receipts"

    audit_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    at_ms: Mapped[int] = mapped_column(sa.BigInteger)
    receipt: Mapped[str] = mapped_column(sa.Text)


class AuditMarker(Base):
    """One of tokensync's own transactions' mark (PostgreSQL: its txid;
    ``producer.txmarks``): the audit trigger stays silent for that transaction, as the
    store writes the audit record itself, with its actor."""

    __tablename__ = "tokensync_audit_marker"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)


# The tables as SQLAlchemy Core sees them: what queries are written against.
PAT = cast(sa.Table, PersonalAccessToken.__table__)
OUTBOX = cast(sa.Table, OutboxRow.__table__)
EPOCHS = cast(sa.Table, Epoch.__table__)
META = cast(sa.Table, TokenMeta.__table__)
REGIONS = cast(sa.Table, RegionRow.__table__)
STATE = cast(sa.Table, StateRow.__table__)
AUDIT = cast(sa.Table, AuditRecord.__table__)
RECEIPTS = cast(sa.Table, AuditReceipt.__table__)
