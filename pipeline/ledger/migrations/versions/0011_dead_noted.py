"""Which attempt's DEAD end was announced, on the item; a partial index of those not yet.

The sweep announces DEAD items that no worker announced with the move. It used to find them
by reading every DEAD item and looking each one up in ``notify_dead_noted``: with millions
of finished rows that is every DEAD item ever, at every sweep. ``items.dead_noted`` holds
the attempt whose death was announced (set in the transaction that writes it to
``notify_dead_noted``), and ``ix_items_dead_unnoted`` covers only DEAD items whose current
attempt is not that one, so the sweep reads the items still to announce and nothing else.
An item given a new attempt that dies again falls back into the index by itself.

Items already noted get their attempt from ``notify_dead_noted`` here. Building the index
reads ``items`` once, under a lock that holds writers (not readers) back until it is done.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Frozen here: a migration must not change with the code that follows it.
DEAD_UNNOTED = "state = 'DEAD' AND (dead_noted IS NULL OR dead_noted <> attempt)"

BACKFILL = """
UPDATE items SET dead_noted = attempt
WHERE state = 'DEAD' AND EXISTS (
    SELECT 1 FROM notify_dead_noted d WHERE d.item_id = items.id AND d.attempt = items.attempt)
"""


def upgrade() -> None:
    # A nullable column without a default: no table rewrite on either database (SQLite
    # adds it in place, so the item_counts triggers stay).
    op.add_column("items", sa.Column("dead_noted", sa.Integer(), nullable=True))
    op.execute(BACKFILL)
    where = sa.text(DEAD_UNNOTED)
    op.create_index(
        "ix_items_dead_unnoted",
        "items",
        ["batch_id", "line_no"],
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_items_dead_unnoted", table_name="items")
    # ALTER TABLE ... DROP COLUMN on SQLite too (3.35+): a batch copy of the table would
    # lose the item_counts triggers.
    op.drop_column("items", "dead_noted")
