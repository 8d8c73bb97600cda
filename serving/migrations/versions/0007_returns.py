"""returns and refunds as a flow

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 13:00:00

``returns``: a return of an order opened from the customer's ticket (order, product,
customer, the reasons, its state: requested, approved, label_sent, received, refunded
or rejected); ``return_events``: every change of state with who and when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import serving.store

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "returns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("order_id", sa.String(100), nullable=True),
        sa.Column("product_id", sa.String(100), nullable=True),
        sa.Column("customer_id", sa.String(200), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_by_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("updated_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("closed_at", serving.store.UTCDateTime(), nullable=True),
    )
    for column in ("ticket_id", "product_id", "customer_id", "state"):
        op.create_index(f"ix_returns_{column}", "returns", [column])
    op.create_table(
        "return_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("return_id", sa.Integer(), sa.ForeignKey("returns.id"), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_key_id", sa.Integer(), nullable=True),
        sa.Column("at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_return_events_return_id", "return_events", ["return_id"])


def downgrade() -> None:
    op.drop_table("return_events")
    op.drop_table("returns")
