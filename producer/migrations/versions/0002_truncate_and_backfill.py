"""Outbox triggers of this release (PostgreSQL: TRUNCATE becomes a global epoch), the
``tokensync_state`` table, and the mark that rows older than the triggers await a backfill.

The triggers are (re)installed from ``producer.triggers``: idempotent, so a store
created by 0001 of this release and one created by an older release end alike.
Rows older than tokensync are published afterwards by ``producer.backfill``
(batched, outside this transaction), which ``producer.schema.migrate`` runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from producer.backfill import mark_pending
from producer.triggers import install_statements

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    for statement in install_statements(bind.dialect.name):
        op.execute(statement)
    op.create_table(
        "tokensync_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value_ms", sa.BigInteger, nullable=False),
    )
    mark_pending(bind)


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_table("tokensync_state")
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tokensync_pat_truncate ON personal_access_tokens")
        op.execute("DROP FUNCTION IF EXISTS tokensync_pat_truncated()")
