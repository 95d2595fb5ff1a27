"""The notification tables, in the ledger's metadata (migration 0005 creates them)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from pipeline.ledger.tables import metadata

outbox = Table(
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

endpoints = Table(
    "notify_endpoints",
    metadata,
    Column("url", Text, primary_key=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
)

# DEAD items already announced, per attempt: the sweep announces each one once.
dead_noted = Table(
    "notify_dead_noted",
    metadata,
    Column("item_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("noted_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("item_id", "attempt", name="pk_notify_dead_noted"),
)
