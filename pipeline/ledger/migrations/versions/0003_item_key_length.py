"""Item keys hold nested ids (``day2/meeting``) up to 1024 bytes.

Ids mirror the input's directory tree, so a key is a relative path checked against
``pipeline.inputs.ids.MAX_ID_BYTES``; 200 characters would refuse deep archives on PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _alter(old: int, new: int) -> None:
    # SQLite does not enforce VARCHAR lengths, and rebuilding the table would trip the
    # attempts table's foreign keys: only PostgreSQL changes (tables.py says the same).
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "items",
            "key",
            type_=sa.String(new),
            existing_type=sa.String(old),
            existing_nullable=False,
        )


def upgrade() -> None:
    _alter(200, 1024)


def downgrade() -> None:
    _alter(1024, 200)
