"""What a million-line intake spent its time on: index entries, and a trigger's joins.

Every row COPYed into ``items`` and ``attempts`` is written into each of their indexes, and
on PostgreSQL that is most of an intake's database time. Two indexes were a leading part of
another and answered nothing it does not (``ix_items_batch_state`` of
``ix_items_batch_state_line``, ``ix_attempts_item_id`` of ``uq_attempts_item_number``):
dropped. Four cover a column that is empty when an item is entered and stays empty for most
items or until much later (the provider's task id, the stored audio's key, a failure's
code): they become partial, ``WHERE <column> IS NOT NULL``, so a new row costs them
nothing. Every query reading through them compares that column to a value, which implies
the condition, so both databases still use them.

PostgreSQL: the trigger counting the models of new attempts (``attempt_models``, 0009) looks
up each new attempt's item by id. Given a chunk of 10,000 attempts, the planner chose a hash
join over all of ``items`` and ``attempts`` instead, once per chunk: an intake slowed with
every row already entered, and a million lines spent most of their time there. The function
now plans its lookups as nested loops over the indexes, and looks for a superseded attempt
only behind attempts after the first.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# (index, table, columns, the column that must be set): frozen here, as in every migration.
PARTIAL = (
    ("ix_items_provider_task_id", "items", ["provider_task_id"], "provider_task_id"),
    ("ix_items_media_key", "items", ["media_key"], "media_key"),
    ("ix_attempts_provider_task_id", "attempts", ["provider_task_id"], "provider_task_id"),
    (
        "ix_items_batch_code_line",
        "items",
        ["batch_id", "error_code", "line_no", "id"],
        "error_code",
    ),
)


# attempt_models_inserted() as 0009 made it, and as it is now.
MODELS_INSERTED = """
CREATE OR REPLACE FUNCTION attempt_models_inserted() RETURNS trigger LANGUAGE plpgsql
{settings}AS $$
BEGIN
    INSERT INTO attempt_models (batch_id, engine, model, n)
    SELECT batch_id, engine, model, sum(n)
    FROM (
        SELECT i.batch_id, w.engine, w.model, 1 AS n
        FROM new_rows w JOIN items i ON i.id = w.item_id
        WHERE substr(i.key, 1, 1) <> '@'
        UNION ALL
        SELECT i.batch_id, p.engine, p.model, -1
        FROM new_rows w JOIN items i ON i.id = w.item_id
        JOIN attempts p ON p.item_id = w.item_id AND p.number = w.number - 1
        WHERE {later}substr(i.key, 1, 1) <> '@'
    ) AS d
    GROUP BY batch_id, engine, model
    HAVING sum(n) <> 0;
    RETURN NULL;
END $$;
"""
LOOKUPS = "SET enable_hashjoin = off SET enable_mergejoin = off\n"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(MODELS_INSERTED.format(settings=LOOKUPS, later="w.number > 1 AND "))
    op.drop_index("ix_items_batch_state", table_name="items")
    op.drop_index("ix_attempts_item_id", table_name="attempts")
    for name, table, columns, column in PARTIAL:
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, table, columns, _column in PARTIAL:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
    op.create_index("ix_attempts_item_id", "attempts", ["item_id"])
    op.create_index("ix_items_batch_state", "items", ["batch_id", "state"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(MODELS_INSERTED.format(settings="", later=""))
