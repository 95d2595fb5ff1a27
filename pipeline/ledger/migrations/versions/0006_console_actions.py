"""Operator actions (the audit trail) and the indexes the console's item pages need.

``actions`` records who retried, replayed, reprocessed, purged or cancelled what, and when.
The three item indexes serve keyset pagination in manifest order (``line_no, id``) within a
batch, unfiltered or filtered by state or error code, so a page of a million-item batch
is an index range scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_items_batch_line": ["batch_id", "line_no", "id"],
    "ix_items_batch_state_line": ["batch_id", "state", "line_no", "id"],
    "ix_items_batch_code_line": ["batch_id", "error_code", "line_no", "id"],
}


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_actions_item", "actions", ["item_id", "at"])
    op.create_index("ix_actions_batch", "actions", ["batch_id", "at"])
    for name, columns in _INDEXES.items():
        op.create_index(name, "items", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="items")
    op.drop_index("ix_actions_batch", table_name="actions")
    op.drop_index("ix_actions_item", table_name="actions")
    op.drop_table("actions")
