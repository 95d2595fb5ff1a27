"""Batches entered in chunks, and batches whose item rows were collected.

``intake_at`` is set while ``submit`` is still entering a batch's items (the sweeper does
not close it meanwhile; a resumed submit finds it); ``totals`` keeps a finished batch's
counts by state and audio seconds once ``gc`` has deleted its item and attempt rows.
``ix_items_batch_timed`` lets ``status`` read stage timings from the rows that have them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as b:
        b.add_column(sa.Column("intake_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("totals", sa.JSON(), nullable=True))
    where = sa.text("timings IS NOT NULL")
    op.create_index(
        "ix_items_batch_timed", "items", ["batch_id"], postgresql_where=where, sqlite_where=where
    )


def downgrade() -> None:
    op.drop_index("ix_items_batch_timed", table_name="items")
    with op.batch_alter_table("batches") as b:
        b.drop_column("totals")
        b.drop_column("intake_at")
