"""A batch's results.jsonl has one writer at a time.

The worker that finishes a batch's last item writes results.jsonl at once; the sweeper does
the same for batches it finds finished. ``closing_by``/``closing_until`` is the claim on that
write (a compare-and-set on the batch row, with a lease so a writer that dies is replaced).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("closing_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("closing_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_batches_out", "batches", ["out"])


def downgrade() -> None:
    op.drop_index("ix_batches_out", "batches")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("closing_until")
        batch.drop_column("closing_by")
