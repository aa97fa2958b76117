"""The relay lease: which relay may publish, and its fencing epoch.

One row per lease name (``relay``). ``producer.relay_lease`` takes and renews it with one
conditional UPDATE, by the store's clock; ``epoch`` grows by one on every take-over and
is stamped into every record the holder publishes, so regions refuse what an older
holder (paused, then resumed) still sends.

Revision ID: 0005_relay_lease
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_relay_lease"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "tokensync_relay_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        sa.Column("acquired_at_ms", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        table,
        [{"name": "relay", "holder": "", "epoch": 0, "expires_at_ms": 0, "acquired_at_ms": 0}],
    )


def downgrade() -> None:
    op.drop_table("tokensync_relay_lease")
