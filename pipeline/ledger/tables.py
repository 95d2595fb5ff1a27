"""The ledger's tables: the source of truth for every batch, item and attempt.

Defined once with SQLAlchemy Core; the Alembic migrations under ``migrations/`` create the
same schema on SQLite (embedded) and PostgreSQL (distributed).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# States a sweep can act on: waiting for their next step, or claimed under a lease.
WAITING = "state IN ('PENDING', 'PREPARED', 'SUBMITTED')"
CLAIMED = "state IN ('PREPARING', 'TRANSCRIBING', 'SUBMITTING', 'PERSISTING')"
# DEAD items whose current attempt's death has not been announced yet (pipeline/notify):
# the sweep's safety net reads these, not every DEAD row ever noted.
DEAD_UNNOTED = "state = 'DEAD' AND (dead_noted IS NULL OR dead_noted <> attempt)"


def _set(name: str, *columns: str, column: str | None = None) -> Index:
    """An index of the rows whose ``column`` (the first indexed one unless named) is set:
    a column empty when an item is entered costs an intake nothing there (migration 0012).
    A query comparing that column to a value implies the condition."""
    where = text(f"{column or columns[0]} IS NOT NULL")
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


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
    # Who is writing results.jsonl now, and until when (a claim like an item's lease).
    Column("closing_by", String(200), nullable=True),
    Column("closing_until", DateTime(timezone=True), nullable=True),
    Index("ix_batches_out", "out"),
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
    Column("provider_task_id", String(100), nullable=True),
    Column("media_key", Text, nullable=True),  # where the normalized audio lives
    Column("media_url", Text, nullable=True),  # the URL the provider was given
    Column("probe", JSON, nullable=True),
    Column("audio_duration_ms", Integer, nullable=True),
    Column("error_code", String(40), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_detail", JSON, nullable=True),
    # Decided by the exception raised (TransientError or not), read back by re-runs
    # (migration 0009).
    Column("error_retryable", Boolean, nullable=True),
    Column("outputs", JSON, nullable=True),
    Column("timings", JSON, nullable=True),  # {stage: seconds} of the current attempt
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # The attempt whose DEAD end was announced (batch.items_dead); a later attempt that
    # dies is announced again (migration 0011).
    Column("dead_noted", Integer, nullable=True),
    UniqueConstraint("batch_id", "key", name="uq_items_batch_key"),
    Index("ix_items_state_next", "state", "next_run_at"),
    Index("ix_items_state_lease", "state", "lease_until"),
    # The console's item pages: keyset pagination in manifest order, filtered or not
    # (migration 0004).
    Index("ix_items_batch_line", "batch_id", "line_no", "id"),
    Index("ix_items_batch_state_line", "batch_id", "state", "line_no", "id"),
    _set(
        "ix_items_batch_code_line", "batch_id", "error_code", "line_no", "id", column="error_code"
    ),
    # Looked up by value only: empty rows (every item when entered) are left out (0012).
    _set("ix_items_provider_task_id", "provider_task_id"),
    _set("ix_items_media_key", "media_key"),
    # status reads stage timings of the items that have some, not every row of the batch
    Index(
        "ix_items_batch_timed",
        "batch_id",
        postgresql_where=text("timings IS NOT NULL"),
        sqlite_where=text("timings IS NOT NULL"),
    ),
    # The sweep's reads: only rows in states it can act on (migration 0009).
    Index(
        "ix_items_due",
        "next_run_at",
        "created_at",
        postgresql_where=text(WAITING),
        sqlite_where=text(WAITING),
    ),
    Index(
        "ix_items_leased",
        "lease_until",
        postgresql_where=text(CLAIMED),
        sqlite_where=text(CLAIMED),
    ),
    # DEAD items not yet announced, in the order they are announced (migration 0011).
    Index(
        "ix_items_dead_unnoted",
        "batch_id",
        "line_no",
        postgresql_where=text(DEAD_UNNOTED),
        sqlite_where=text(DEAD_UNNOTED),
    ),
)

# Items, audio and latest finish per batch and state, kept by triggers on ``items``
# (migration 0009; read through pipeline/ledger/counts.py). PostgreSQL: signed deltas, many
# rows per batch and state; SQLite: one row each.
item_counts = Table(
    "item_counts",
    metadata,
    Column("batch_id", String(64), nullable=False),
    Column("state", String(20), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("audio_ms", BigInteger, nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=True),
    Index("ix_item_counts_batch_state", "batch_id", "state"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(64), ForeignKey("items.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("engine", String(20), nullable=False),
    Column("model", String(100), nullable=False),
    Column("options", JSON, nullable=False, default=dict),
    Column("state", String(20), nullable=False),  # RUNNING | SUCCEEDED | FAILED | DEAD
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("provider_task_id", String(100), nullable=True),
    Column("provider_request_id", String(100), nullable=True),
    Column("error_code", String(40), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_detail", JSON, nullable=True),
    Column("error_retryable", Boolean, nullable=True),
    Column("timings", JSON, nullable=False, default=dict),  # {stage: seconds}
    UniqueConstraint("item_id", "number", name="uq_attempts_item_number"),
    _set("ix_attempts_provider_task_id", "provider_task_id"),
)

# -- notifications (pipeline/notify/): the outbox, disabled endpoints, DEAD items announced --
notify_outbox = Table(
    "notify_outbox",
    metadata,
    Column("id", String(40), primary_key=True),  # msg_<uuid>: the webhook-id of every try
    Column("event_type", String(40), nullable=False),
    Column("batch_id", String(64), nullable=True, index=True),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),  # the exact JSON every try sends
    Column("dedupe", String(200), nullable=True),  # unique with url (see the migration)
    Column("state", String(12), nullable=False),  # PENDING DELIVERED FAILED DISABLED
    Column("tries", Integer, nullable=False),
    # When the next try is due; while a deliverer holds the row, when its claim runs out.
    Column("next_at", DateTime(timezone=True), nullable=True),
    Column("claim", String(40), nullable=True),  # the deliverer holding the current try
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Index("ix_notify_outbox_state_next", "state", "next_at"),
    Index("uq_notify_outbox_dedupe_url", "dedupe", "url", unique=True),
)

notify_endpoints = Table(
    "notify_endpoints",
    metadata,
    Column("url", Text, primary_key=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
)

# DEAD items already announced, per attempt: the sweep announces each one once.
notify_dead_noted = Table(
    "notify_dead_noted",
    metadata,
    Column("item_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("noted_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("item_id", "attempt", name="pk_notify_dead_noted"),
)

# What operators did (retry, replay, reprocess, purge, cancel), from the console or the CLI:
# one row for the batch and one per item it changed, so each item's timeline shows it.
actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),  # console:admin@127.0.0.1, cli:alice
    Column("action", String(40), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=True),  # None: the batch-level row
    Column("detail", JSON, nullable=False, default=dict),
    Index("ix_actions_item", "item_id", "at"),
    Index("ix_actions_batch", "batch_id", "at"),
)

# A batch's budget caps and the running totals admission keeps (pipeline/planning/budget.py): one
# row per batch that has caps; ``rev`` is the compare-and-set guard of every advance.
budgets = Table(
    "budgets",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id"), primary_key=True),
    Column("max_audio_s", Float, nullable=True),
    Column("max_cost", Float, nullable=True),
    Column("prices", JSON, nullable=False, default=dict),  # model -> price per second
    Column("currency", String(16), nullable=True),
    Column("rev", Integer, nullable=False, default=0),
    Column("line", Integer, nullable=False, default=0),  # decided up to this manifest line
    Column("used_s", Float, nullable=False, default=0.0),
    Column("used_cost", Float, nullable=False, default=0.0),
    Column("skip_from", Integer, nullable=True),  # first line over a cap
)

# Per batch, how many items' newest attempt uses each engine and model: what ``status``
# lists under "models", kept by triggers on ``attempts`` (migration 0009; PostgreSQL:
# signed deltas, folded with item_counts).
attempt_models = Table(
    "attempt_models",
    metadata,
    Column("batch_id", String(64), nullable=False),
    Column("engine", String(20), nullable=False),
    Column("model", String(100), nullable=False),
    Column("n", BigInteger, nullable=False),
    Index("ix_attempt_models_batch", "batch_id", "engine", "model"),
)
