"""signal alerts: spikes, sentiment and urgency shifts, label drift

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

``signal_alerts``: one row per alert sent (kind, subject, window), unique so that each
is sent once whichever process finds it first, with its figures and what its delivery
got.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import serving.store

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signal_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("window_start", serving.store.UTCDateTime(), nullable=False),
        sa.Column("window_end", serving.store.UTCDateTime(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("webhook_status", sa.Text(), nullable=True),
        sa.Column("email_status", sa.Text(), nullable=True),
    )
    op.create_index(
        "ux_signal_alerts_kind_subject_window",
        "signal_alerts",
        ["kind", "subject", "window_end"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_signal_alerts_kind_subject_window", table_name="signal_alerts")
    op.drop_table("signal_alerts")
