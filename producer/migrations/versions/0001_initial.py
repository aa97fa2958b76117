"""Sanctum's personal_access_tokens, the outbox, epochs, token issue times, regions, triggers.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from producer.triggers import drop_statements, install_statements

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# As Laravel's migration creates them on MySQL/MariaDB: ``id()`` and ``morphs()`` are
# ``bigint unsigned``, ``timestamp()`` is ``timestamp`` (UTC inside, session time zone out).
_MYSQL = ("mysql", "mariadb")
BigIntKey = (
    sa.BigInteger()
    .with_variant(sa.Integer(), "sqlite")
    .with_variant(mysql.BIGINT(unsigned=True), *_MYSQL)
)
UnsignedBigInt = sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), *_MYSQL)
Timestamp = sa.DateTime().with_variant(mysql.TIMESTAMP(), *_MYSQL)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table("personal_access_tokens"):
        # Sanctum 4.x's migration, column for column. An existing table (a Laravel app
        # got there first) is kept as it is.
        op.create_table(
            "personal_access_tokens",
            sa.Column("id", BigIntKey, primary_key=True, autoincrement=True),
            sa.Column("tokenable_type", sa.String(255), nullable=False),
            sa.Column("tokenable_id", UnsignedBigInt, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("token", sa.String(64), nullable=False),
            sa.Column("abilities", sa.Text, nullable=True),
            sa.Column("last_used_at", Timestamp, nullable=True),
            sa.Column("expires_at", Timestamp, nullable=True),
            sa.Column("created_at", Timestamp, nullable=True),
            sa.Column("updated_at", Timestamp, nullable=True),
            sa.UniqueConstraint("token", name="personal_access_tokens_token_unique"),
        )
        op.create_index(
            "personal_access_tokens_tokenable_type_tokenable_id_index",
            "personal_access_tokens",
            ["tokenable_type", "tokenable_id"],
        )
        op.create_index(
            "personal_access_tokens_expires_at_index", "personal_access_tokens", ["expires_at"]
        )
    op.create_table(
        "tokensync_outbox",
        sa.Column("seq", BigIntKey, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("token_id", sa.BigInteger, nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("tokenable_type", sa.String(255), nullable=True),
        sa.Column("tokenable_id", sa.String(255), nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("abilities", sa.Text, nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("row_created_at", Timestamp, nullable=True),
        sa.Column("issued_at_ms", sa.BigInteger, nullable=True),
        sa.Column("scope", sa.String(600), nullable=True),
        sa.Column("before_ms", sa.BigInteger, nullable=True),
        sa.Column("recorded_at_ms", sa.BigInteger, nullable=False),
        sa.Column("published_at_ms", sa.BigInteger, nullable=True),
        sa.Column("kafka_partition", sa.Integer, nullable=True),
        sa.Column("kafka_offset", sa.BigInteger, nullable=True),
        sqlite_autoincrement=True,  # seq values are never reused, even after deletes
    )
    op.create_index("tokensync_outbox_unpublished", "tokensync_outbox", ["published_at_ms", "seq"])
    op.create_table(
        "tokensync_epochs",
        sa.Column("scope", sa.String(600), primary_key=True),
        sa.Column("before_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tokensync_token_meta",
        sa.Column("token_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("issued_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tokensync_suppress",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    )
    op.create_table(
        "tokensync_regions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("redis_url", sa.String(1024), nullable=False),
        sa.Column("added_at_ms", sa.BigInteger, nullable=False),
    )
    for statement in install_statements(bind.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in drop_statements(bind.dialect.name):
        op.execute(statement)
    for table in (
        "tokensync_regions",
        "tokensync_suppress",
        "tokensync_token_meta",
        "tokensync_epochs",
        "tokensync_outbox",
    ):
        op.drop_table(table)
