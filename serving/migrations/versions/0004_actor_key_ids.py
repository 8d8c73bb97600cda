"""actors by key id; key names unique per role among active keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00

Who did something was recorded by key name only, and two keys could share a name, so
one "alice" could act on the other's claim and the history could not tell them apart.
Every row that records an actor now also records the key id (the identity; the name
stays for display), and a name is unique among the active (not revoked) keys of a
role (a partial unique index; a revoked key's name can be taken again, so a key can
be replaced under the same name).

Existing data:

- Key ids are filled in from the recorded names where the name belonged to exactly
  one key (of any role, active or revoked). A name that several keys shared cannot be
  attributed: those rows keep the name and no key id. A claim without a key id can be
  released only by an admin (or runs out with its lease).
- Active keys that share a name and a role: the oldest (lowest id) keeps the name,
  each other one is renamed to ``<name> (key <id>)`` (cut to fit 200 characters). The
  keys themselves keep working; ``carelens keys list`` shows the new names.

The downgrade drops the index and the columns; renamed keys keep their new names.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTIVE = sa.text("revoked_at IS NULL")
NAME_LENGTH = 200

# (table, name column, key id column)
ACTORS = (
    ("messages", "handled_by", "handled_by_key_id"),
    ("tickets", "claimed_by", "claimed_by_key_id"),
    ("ticket_events", "actor", "actor_key_id"),
    ("label_corrections", "actor", "actor_key_id"),
    ("reply_templates", "updated_by", "updated_by_key_id"),
    ("consent_events", "actor", "actor_key_id"),
    ("campaigns", "created_by", "created_by_key_id"),
    ("campaign_runs", "actor", "actor_key_id"),
)


def _backfill(table: str, name_column: str, key_column: str) -> None:
    """The key id of each recorded name that exactly one key has had."""
    op.execute(
        f"UPDATE {table} SET {key_column} = "
        f"(SELECT MIN(k.id) FROM api_keys k WHERE k.name = {table}.{name_column}) "
        f"WHERE {name_column} IS NOT NULL AND "
        f"(SELECT COUNT(*) FROM api_keys k WHERE k.name = {table}.{name_column}) = 1"
    )


def _rename_duplicates() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, name, role FROM api_keys WHERE revoked_at IS NULL ORDER BY id")
    ).all()
    taken = {(name, role) for _id, name, role in rows}
    kept: set[tuple[str, str]] = set()
    for key_id, name, role in rows:
        if (name, role) not in kept:
            kept.add((name, role))
            continue
        suffix = f" (key {key_id})"
        new = name[: NAME_LENGTH - len(suffix)] + suffix
        while (new, role) in taken:  # only if someone already chose exactly that name
            new = new[: NAME_LENGTH - 1] + "'"
        taken.add((new, role))
        conn.execute(
            sa.text("UPDATE api_keys SET name = :name WHERE id = :id"), {"name": new, "id": key_id}
        )


def upgrade() -> None:
    for table, _name, key_column in ACTORS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column(key_column, sa.Integer(), nullable=True))
    for table, name_column, key_column in ACTORS:
        _backfill(table, name_column, key_column)
    _rename_duplicates()
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ux_api_keys_active_name_role",
            ["name", "role"],
            unique=True,
            postgresql_where=ACTIVE,
            sqlite_where=ACTIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ux_api_keys_active_name_role")
    for table, _name, key_column in ACTORS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(key_column)
