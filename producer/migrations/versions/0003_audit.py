"""The audit trail: records, receipts attached to them, the marker and the ``sql`` trigger.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from producer.audit_triggers import drop_statements, install_statements

#: MySQL's TEXT holds 64 KiB: a record's detail (a token's name and up to 256 abilities)
#: and a receipt may need more.
_LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigIntKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "tokensync_audit",
        sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(600), nullable=True),
        sa.Column("token_id", sa.BigInteger, nullable=True),
        sa.Column("tokenable_type", sa.String(255), nullable=True),
        sa.Column("tokenable_id", sa.String(255), nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("removed", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("detail", _LONG_TEXT, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("tokensync_audit_at", "tokensync_audit", ["at_ms"])
    op.create_table(
        "tokensync_audit_receipts",
        sa.Column("audit_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("receipt", _LONG_TEXT, nullable=False),
    )
    op.create_table(
        "tokensync_audit_marker",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    )
    for statement in install_statements(bind.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in drop_statements(bind.dialect.name):
        op.execute(statement)
    for table in ("tokensync_audit_marker", "tokensync_audit_receipts", "tokensync_audit"):
        op.drop_table(table)
