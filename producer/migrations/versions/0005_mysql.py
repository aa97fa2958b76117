"""MySQL/MariaDB: the row mass revocations lock writers out with (``producer.triggers_mysql``).

Nothing changes on PostgreSQL or SQLite. The lead re-chains this after 0004.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from producer import triggers_mysql

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in triggers_mysql.DIALECTS:
        return
    bind.execute(
        sa.text(
            "INSERT INTO tokensync_state (name, value_ms) VALUES (:n, 0)"
            " ON DUPLICATE KEY UPDATE value_ms = value_ms"
        ),
        {"n": triggers_mysql.WRITERS_ROW},
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in triggers_mysql.DIALECTS:
        bind.execute(
            sa.text("DELETE FROM tokensync_state WHERE name = :n"),
            {"n": triggers_mysql.WRITERS_ROW},
        )
