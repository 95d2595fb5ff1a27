"""Initial ledger: batches, items, attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("manifest", sa.Text, nullable=True),
        sa.Column("out", sa.Text, nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("done_at", TZ, nullable=True),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("source_stamp", sa.String(100), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", TZ, nullable=True),
        sa.Column("next_run_at", TZ, nullable=True),
        sa.Column("polls", sa.Integer, nullable=False),
        sa.Column("submitted_at", TZ, nullable=True),
        sa.Column("provider_task_id", sa.String(100), nullable=True),
        sa.Column("media_key", sa.Text, nullable=True),
        sa.Column("media_url", sa.Text, nullable=True),
        sa.Column("probe", sa.JSON, nullable=True),
        sa.Column("audio_duration_ms", sa.Integer, nullable=True),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("error_detail", sa.JSON, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("timings", sa.JSON, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.UniqueConstraint("batch_id", "key", name="uq_items_batch_key"),
    )
    op.create_index("ix_items_batch_state", "items", ["batch_id", "state"])
    op.create_index("ix_items_state_next", "items", ["state", "next_run_at"])
    op.create_index("ix_items_state_lease", "items", ["state", "lease_until"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(64), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("provider_task_id", sa.String(100), nullable=True),
        sa.Column("provider_request_id", sa.String(100), nullable=True),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("error_detail", sa.JSON, nullable=True),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.UniqueConstraint("item_id", "number", name="uq_attempts_item_number"),
    )
    op.create_index("ix_attempts_item_id", "attempts", ["item_id"])


def downgrade() -> None:
    op.drop_table("attempts")
    op.drop_index("ix_items_state_lease", "items")
    op.drop_index("ix_items_state_next", "items")
    op.drop_index("ix_items_batch_state", "items")
    op.drop_table("items")
    op.drop_table("batches")
