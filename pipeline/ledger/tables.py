"""The ledger's tables: the source of truth for every batch, item and attempt.

Defined once with SQLAlchemy Core; the Alembic migrations under ``migrations/`` create the
same schema on SQLite (embedded) and PostgreSQL (distributed).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(20), nullable=False),  # run | submit | schedule
    Column("manifest", Text, nullable=True),
    Column("out", Text, nullable=False),  # output dir or URL prefix
    Column("engine", String(20), nullable=False),
    Column("model", String(100), nullable=False),
    Column("options", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),  # results.jsonl written
    Column("intake_at", DateTime(timezone=True), nullable=True),  # items still being entered
    Column("totals", JSON, nullable=True),  # counts and audio seconds kept by gc
)

items = Table(
    "items",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.id"), nullable=False),
    # The item id: <key>.json etc., up to ids.MAX_ID_BYTES. SQLite ignores VARCHAR lengths,
    # so its schema keeps the 200 it was created with (migration 0003).
    Column("key", String(1024).with_variant(String(200), "sqlite"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("source", Text, nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("source_stamp", String(100), nullable=True),
    Column("state", String(20), nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("tries", Integer, nullable=False, default=0),  # transient retries this attempt
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("next_run_at", DateTime(timezone=True), nullable=True),
    Column("polls", Integer, nullable=False, default=0),
    Column("submitted_at", DateTime(timezone=True), nullable=True),
    Column("provider_task_id", String(100), nullable=True, index=True),
    Column("media_key", Text, nullable=True, index=True),  # where the normalized audio lives
    Column("media_url", Text, nullable=True),  # the URL the provider was given
    Column("probe", JSON, nullable=True),
    Column("audio_duration_ms", Integer, nullable=True),
    Column("error_code", String(40), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_detail", JSON, nullable=True),
    Column("outputs", JSON, nullable=True),
    Column("timings", JSON, nullable=True),  # {stage: seconds} of the current attempt
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("batch_id", "key", name="uq_items_batch_key"),
    Index("ix_items_batch_state", "batch_id", "state"),
    Index("ix_items_state_next", "state", "next_run_at"),
    Index("ix_items_state_lease", "state", "lease_until"),
    # status reads stage timings of the items that have some, not every row of the batch
    Index("ix_items_batch_timed", "batch_id", postgresql_where=text("timings IS NOT NULL"),
          sqlite_where=text("timings IS NOT NULL")),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(64), ForeignKey("items.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("engine", String(20), nullable=False),
    Column("model", String(100), nullable=False),
    Column("options", JSON, nullable=False, default=dict),
    Column("state", String(20), nullable=False),  # RUNNING | SUCCEEDED | FAILED | DEAD
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("provider_task_id", String(100), nullable=True, index=True),
    Column("provider_request_id", String(100), nullable=True),
    Column("error_code", String(40), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_detail", JSON, nullable=True),
    Column("timings", JSON, nullable=False, default=dict),  # {stage: seconds}
    UniqueConstraint("item_id", "number", name="uq_attempts_item_number"),
)
