"""the mailbox: reply addresses and threads, attachments, the outbox, SLA alerts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:00:00

- ``messages.customer_name``: the buyer's name as they signed (fills templates);
- ``messages.reply_to`` and ``messages.references``: where an answer to an e-mail goes
  and the Message-IDs it answers, so replies are threaded and a customer's answer finds
  its ticket; ``messages.thread_ticket_id``: the ticket a customer's answer joined (such
  a message opens no ticket of its own).
- ``tickets.reply_due_at``: when the customer's latest answer must be answered.
- ``attachments``: the files that came with an e-mail.
- ``outbound_mail``: replies to send by SMTP, delivered with retries (``automatic``:
  an automatic answer).
- ``sla_alerts``: the warnings sent before and when a ticket's answer is late, once
  each.

Existing rows keep null in the new columns. The columns are added in place (SQLite
rebuilds no table). The downgrade drops them on PostgreSQL; on SQLite it refuses (the
column with a foreign key could only go by rebuilding the messages table, which the
tickets point at): restore the backup taken before the upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import serving.store

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
THREAD_FK = "fk_messages_thread_ticket_id_tickets"


def upgrade() -> None:
    # plain ADD COLUMNs (no table rebuild: SQLite would have to drop a table the
    # tickets point at); the foreign key goes inline with its column
    op.add_column("messages", sa.Column("customer_name", sa.String(200), nullable=True))
    op.add_column("messages", sa.Column("reply_to", sa.String(320), nullable=True))
    op.add_column("messages", sa.Column("references", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column's foreign key only inline, in raw SQL
        op.execute(
            "ALTER TABLE messages ADD COLUMN thread_ticket_id INTEGER "
            f"CONSTRAINT {THREAD_FK} REFERENCES tickets (id)"
        )
    else:
        op.add_column("messages", sa.Column("thread_ticket_id", sa.Integer(), nullable=True))
        op.create_foreign_key(THREAD_FK, "messages", "tickets", ["thread_ticket_id"], ["id"])
    op.create_index("ix_messages_thread_ticket_id", "messages", ["thread_ticket_id"])
    op.add_column("tickets", sa.Column("reply_due_at", serving.store.UTCDateTime(), nullable=True))
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("messages.id"), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_attachments_message_id", "attachments", ["message_id"])
    op.create_table(
        "outbound_mail",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("message_id", sa.String(300), nullable=False, unique=True),
        sa.Column("from_addr", sa.String(320), nullable=False),
        sa.Column("to_addr", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("in_reply_to", sa.String(300), nullable=True),
        sa.Column("references", sa.Text(), nullable=True),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("sent_at", serving.store.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_outbound_mail_ticket_id", "outbound_mail", ["ticket_id"])
    op.create_index("ix_outbound_mail_state_next", "outbound_mail", ["state", "next_attempt_at"])
    op.create_table(
        "sla_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("due_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("created_at", serving.store.UTCDateTime(), nullable=False),
        sa.Column("webhook_status", sa.Text(), nullable=True),
        sa.Column("email_status", sa.Text(), nullable=True),
    )
    op.create_index(
        "ux_sla_alerts_ticket_kind_due", "sla_alerts", ["ticket_id", "kind", "due_at"], unique=True
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite drops a column that holds a foreign key only by rebuilding the table,
        # which the tables pointing at it forbid: restore the copy taken before 0005
        raise NotImplementedError(
            "0005 cannot be undone on SQLite: restore the database file backed up before "
            "the upgrade (docs/operations.md, Backups)"
        )
    op.drop_table("sla_alerts")
    op.drop_table("outbound_mail")
    op.drop_table("attachments")
    op.drop_column("tickets", "reply_due_at")
    op.drop_index("ix_messages_thread_ticket_id", "messages")
    op.drop_constraint(THREAD_FK, "messages", type_="foreignkey")
    op.drop_column("messages", "thread_ticket_id")
    for column in ("references", "reply_to", "customer_name"):
        op.drop_column("messages", column)
