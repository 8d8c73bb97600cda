"""message lists page by time: an index on (channel, received_at, id)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00

``GET /v1/reviews`` pages with a cursor (the last row's group, arrival and id): each
page is a range scan of this index, however many messages the store holds.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_channel_received", "messages", ["channel", "received_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_channel_received", table_name="messages")
