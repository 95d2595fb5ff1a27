"""Indexes for the lookups every poll, finish and scheduled run makes.

Without them each poll (items by provider task), each finish (other users of the stored
audio) and each scheduled run (sources already known) scans the whole items table, which
grows with every batch ever run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_items_provider_task_id", "items", "provider_task_id"),
    ("ix_items_media_key", "items", "media_key"),
    ("ix_items_source", "items", "source"),
    ("ix_attempts_provider_task_id", "attempts", "provider_task_id"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in reversed(INDEXES):
        op.drop_index(name, table)
