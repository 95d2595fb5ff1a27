"""Whether an item's (and an attempt's) failure is worth retrying, stored beside its code.

The exception raised decides it (TransientError or not); re-runs read it back instead of
guessing from the code. Failures recorded before this revision get the code's nature: the
codes raised only as transient errors, and ``download_failed`` (raised both ways; it was
retried by re-runs before).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen here: a migration must not change with the code that follows it.
_TRANSIENT = (
    "download_failed",
    "download_timeout",
    "provider_throttled",
    "provider_error",
    "provider_timeout",
    "provider_bad_response",
    "task_lost",
    "poll_timeout",
    "result_expired",
    "storage_unavailable",
    "lease_expired",
)


def upgrade() -> None:
    for table in ("items", "attempts"):
        with op.batch_alter_table(table) as b:
            b.add_column(sa.Column("error_retryable", sa.Boolean(), nullable=True))
        t = sa.table(
            table, sa.column("error_code", sa.String), sa.column("error_retryable", sa.Boolean)
        )
        op.execute(
            t.update()
            .where(t.c.error_code.is_not(None))
            .values(error_retryable=t.c.error_code.in_(_TRANSIENT))
        )


def downgrade() -> None:
    for table in ("attempts", "items"):
        with op.batch_alter_table(table) as b:
            b.drop_column("error_retryable")
