"""Alembic environment: run with a connection handed in by ``pipeline.ledger.migrate``."""

from __future__ import annotations

from alembic import context

from pipeline.ledger.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` CLI use
    from sqlalchemy import create_engine

    engine = create_engine(str(context.config.get_main_option("sqlalchemy.url")))
    connection = engine.connect()

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
