"""satisfaction surveys: the customers' answers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 12:00:00

``survey_answers``: one answer (1-5 stars, an optional comment) per resolved ticket;
the survey link itself is signed and needs no row until it is answered.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import serving.store

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "survey_answers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("answered_at", serving.store.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("ticket_id"),
    )


def downgrade() -> None:
    op.drop_table("survey_answers")
