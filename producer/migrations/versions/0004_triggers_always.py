"""Triggers that always fire, on the current transaction's markers only.

Reinstalls the outbox triggers (``producer.triggers``) and the audit trigger
(``producer.audit_triggers``) of this release on existing installs: on PostgreSQL
they are ``ENABLE ALWAYS``, so a ``session_replication_role = replica`` session (a
seeder, ``pg_restore --disable-triggers``) cannot write token rows unseen.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from producer import audit_triggers, triggers

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in triggers.install_statements(dialect):
        op.execute(statement)
    for statement in audit_triggers.install_statements(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # The triggers stay; they fire as ordinary (ENABLE) triggers again.
        for table, trigger in (
            ("personal_access_tokens", "tokensync_pat_truncate"),
            ("personal_access_tokens", "tokensync_pat_outbox"),
            ("tokensync_epochs", "tokensync_epoch_outbox"),
            ("tokensync_outbox", "tokensync_outbox_audit"),
        ):
            op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
