"""claim index: open and claimed tickets by queue in rank order

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 23:40:00

``claim_next`` asks for the first ticket of a queue that is open (or claimed with an
expired lease) in (rank_at, id) order. With only ``(queue, state, rank_at)`` the OR on
state makes PostgreSQL read every open ticket of the queue and sort them (47 ms at
100k open tickets, growing with the backlog). This partial index holds just the
claimable states in the claim order, so the claim reads the first few index entries
whatever the backlog (measured by ``carelens bench api``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CLAIMABLE = sa.text("state IN ('open', 'claimed')")


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tickets_claimable",
            ["queue", "rank_at", "id"],
            unique=False,
            postgresql_where=CLAIMABLE,
            sqlite_where=CLAIMABLE,
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_claimable")
