"""campaign details: buyer and product names on orders, fallbacks on campaigns

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:00:00

``orders.customer_name`` and ``orders.product_name`` fill a campaign's
``{customer_name}`` and ``{product}``; ``campaigns.fallbacks`` holds the text a
placeholder takes when a customer has no value for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("customer_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("product_name", sa.String(300), nullable=True))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("fallbacks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("fallbacks")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("product_name")
        batch.drop_column("customer_name")
