"""the reviews list pages through an index: messages.needs_attention

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00

``needs_attention``: a review not handled yet and negative (its sentiment label, the
ticket's else the model's, or one or two stars), kept by the service whenever one of
those changes (``Message.update_attention``); filled here for the stored reviews.
``ix_messages_attention (channel, needs_attention, received_at, id)`` and the same with
``product_id`` after ``channel``: each page of ``GET /v1/reviews`` (unhandled negatives
first, newest first within, with a cursor; or one product's) is a range of one of
them, however many messages the store holds.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _labels(value) -> dict:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def upgrade() -> None:
    # a plain ALTER TABLE ADD COLUMN, also on SQLite (a batch copy would drop the table
    # that tickets point at)
    op.add_column(
        "messages",
        sa.Column("needs_attention", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_messages_attention",
        "messages",
        ["channel", "needs_attention", "received_at", "id"],
    )
    op.create_index(
        "ix_messages_product_attention",
        "messages",
        ["channel", "product_id", "needs_attention", "received_at", "id"],
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT m.id, m.rating, t.id, t.labels, p.labels FROM messages m "
            "LEFT JOIN tickets t ON t.message_id = m.id "
            "LEFT JOIN predictions p ON p.message_id = m.id "
            "WHERE m.channel = 'review' AND m.handled_at IS NULL"
        )
    )
    ids = [
        mid
        for mid, rating, tid, t_labels, p_labels in rows
        if (rating is not None and rating <= 2)
        or "negative" in _labels(t_labels if tid is not None else p_labels).get("sentiment", [])
    ]
    for start in range(0, len(ids), 1000):
        conn.execute(
            sa.text("UPDATE messages SET needs_attention = true WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids[start : start + 1000]},
        )


def downgrade() -> None:
    op.drop_index("ix_messages_product_attention", table_name="messages")
    op.drop_index("ix_messages_attention", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("needs_attention")
