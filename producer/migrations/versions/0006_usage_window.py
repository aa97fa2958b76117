"""The watch: a rolling usage window per region, token and client, and the findings of
the detectors (``producer.watch_tables``).

Revision ID: 0006_usage_window
Revises: 0005_relay_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from producer.models import BigIntKey

revision = "0006_usage_window"
down_revision = "0005_relay_lease"
branch_labels = None
depends_on = None

_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "tokensync_usage_window",
        sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("token_id", sa.BigInteger, nullable=True),
        sa.Column("client", sa.String(96), nullable=False),
        sa.Column("hash_prefix", sa.String(8), nullable=True),
        sa.Column("valid", sa.Integer, nullable=False),
        sa.Column("forbidden", sa.Integer, nullable=False),
        sa.Column("denied", sa.Integer, nullable=False),
        sa.Column("invalid", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("tokensync_usage_window_at", "tokensync_usage_window", ["at_ms"])
    op.create_index("tokensync_usage_window_token", "tokensync_usage_window", ["token_id", "at_ms"])
    op.create_table(
        "tokensync_findings",
        sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("detector", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("token_id", sa.BigInteger, nullable=True),
        sa.Column("tokenable_type", sa.String(255), nullable=True),
        sa.Column("tokenable_id", sa.String(255), nullable=True),
        sa.Column("summary", sa.String(600), nullable=False),
        sa.Column("evidence", _LONG_TEXT, nullable=False),
        sa.Column("reaction", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(600), nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("audit_id", sa.BigInteger, nullable=True),
        sa.Column("delivered_at_ms", sa.BigInteger, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("tokensync_findings_at", "tokensync_findings", ["at_ms"])
    op.create_index(
        "tokensync_findings_subject", "tokensync_findings", ["detector", "subject", "at_ms"]
    )


def downgrade() -> None:
    op.drop_table("tokensync_findings")
    op.drop_table("tokensync_usage_window")
