"""Budget caps per batch and the running totals admission keeps.

A new table rather than columns on ``batches``: only batches given a cap
(``--max-audio-hours``, ``--max-cost``) have a row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("max_audio_s", sa.Float, nullable=True),
        sa.Column("max_cost", sa.Float, nullable=True),
        sa.Column("prices", sa.JSON, nullable=False),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("rev", sa.Integer, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("used_s", sa.Float, nullable=False),
        sa.Column("used_cost", sa.Float, nullable=False),
        sa.Column("skip_from", sa.Integer, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("budgets")
