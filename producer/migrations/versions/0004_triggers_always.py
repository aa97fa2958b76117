"""Triggers that always fire, on the current transaction's markers only.

Reinstalls the outbox triggers (``producer.triggers``) and the audit trigger
(``producer.audit_triggers``) of this release on existing installs: on PostgreSQL
they are ``ENABLE ALWAYS``, so a ``session_replication_role = replica`` session (a
seeder, ``pg_restore --disable-triggers``) cannot write token rows unseen; and the
suppress and audit triggers honour only a mark of the current transaction
(``producer.txmarks``: on PostgreSQL the marker tables hold txids, so their ``id``
becomes BIGINT; on MySQL/MariaDB they hold random per-transaction tokens, also
BIGINT), so a row someone committed there silences nothing.

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


_MARKERS = ("tokensync_suppress", "tokensync_audit_marker")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _MARKERS:
        op.execute(f"DELETE FROM {table}")  # noqa: S608 - constants; no mark outlives its tx
        if dialect == "postgresql":
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE bigint")
        elif dialect in ("mysql", "mariadb"):
            op.execute(f"ALTER TABLE {table} MODIFY id BIGINT NOT NULL")
    for statement in triggers.install_statements(dialect):
        op.execute(statement)
    for statement in audit_triggers.install_statements(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in _MARKERS:
            op.execute(f"DELETE FROM {table}")  # noqa: S608 - constants
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE integer")
        # The triggers stay; they fire as ordinary (ENABLE) triggers again.
        for table, trigger in (
            ("personal_access_tokens", "tokensync_pat_truncate"),
            ("personal_access_tokens", "tokensync_pat_outbox"),
            ("tokensync_epochs", "tokensync_epoch_outbox"),
            ("tokensync_outbox", "tokensync_outbox_audit"),
        ):
            op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
