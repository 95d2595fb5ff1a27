"""Notifications: the outbox, disabled endpoints, and DEAD items already announced.

Events are written to ``notify_outbox`` in the same transaction as the state change that
causes them and delivered from there (``pipeline/notify/``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("dedupe", sa.String(200), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("next_at", TZ, nullable=True),
        sa.Column("claim", sa.String(40), nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ, nullable=True),
    )
    op.create_index("ix_notify_outbox_batch_id", "notify_outbox", ["batch_id"])
    op.create_index("ix_notify_outbox_state_next", "notify_outbox", ["state", "next_at"])
    op.create_index("uq_notify_outbox_dedupe_url", "notify_outbox", ["dedupe", "url"], unique=True)
    op.create_table(
        "notify_endpoints",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("disabled_at", TZ, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "notify_dead_noted",
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("noted_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("item_id", "attempt", name="pk_notify_dead_noted"),
    )


def downgrade() -> None:
    op.drop_table("notify_dead_noted")
    op.drop_table("notify_endpoints")
    op.drop_index("uq_notify_outbox_dedupe_url", "notify_outbox")
    op.drop_index("ix_notify_outbox_state_next", "notify_outbox")
    op.drop_index("ix_notify_outbox_batch_id", "notify_outbox")
    op.drop_table("notify_outbox")
