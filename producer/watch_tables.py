"""The tables of the watch: the rolling usage window regions report into, and the
findings its detectors raise (``producer.detectors``; migration ``0006_usage_window``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from producer.models import Base, BigIntKey

__all__ = ["FINDINGS", "USAGE_WINDOW"]

_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

USAGE_WINDOW = sa.Table(
    "tokensync_usage_window",
    Base.metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False),  # the region's report time
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("token_id", sa.BigInteger, nullable=True),  # None: invalid presentations
    sa.Column("client", sa.String(96), nullable=False),  # "" when nobody knew it
    sa.Column("hash_prefix", sa.String(8), nullable=True),  # of an invalid presentation
    sa.Column("valid", sa.Integer, nullable=False, default=0),
    sa.Column("forbidden", sa.Integer, nullable=False, default=0),
    sa.Column("denied", sa.Integer, nullable=False, default=0),
    sa.Column("invalid", sa.Integer, nullable=False, default=0),
    sa.Index("tokensync_usage_window_at", "at_ms"),
    sa.Index("tokensync_usage_window_token", "token_id", "at_ms"),
    sqlite_autoincrement=True,
)
"""Presentations per region, interval, token (or invalid hash prefix) and client; rows
older than the window (``TOKENSYNC_USAGE_WINDOW``, 7 days) are deleted."""

FINDINGS = sa.Table(
    "tokensync_findings",
    Base.metadata,
    sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("detector", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),  # token:7, principal:T:1, client:...
    sa.Column("token_id", sa.BigInteger, nullable=True),
    sa.Column("tokenable_type", sa.String(255), nullable=True),
    sa.Column("tokenable_id", sa.String(255), nullable=True),
    sa.Column("summary", sa.String(600), nullable=False),
    sa.Column("evidence", _LONG_TEXT, nullable=False),  # JSON
    sa.Column("reaction", sa.String(32), nullable=False),  # the policy when it fired
    sa.Column("outcome", sa.String(600), nullable=True),  # what the reaction did
    sa.Column("seq", sa.BigInteger, nullable=True),  # the revocation's seq
    sa.Column("audit_id", sa.BigInteger, nullable=True),  # the finding's audit record
    sa.Column("delivered_at_ms", sa.BigInteger, nullable=True),  # webhook acknowledged
    sa.Index("tokensync_findings_at", "at_ms"),
    sa.Index("tokensync_findings_subject", "detector", "subject", "at_ms"),
    sqlite_autoincrement=True,
)
"""One row per finding, never updated but for its reaction outcome and delivery time."""
