"""Item counts kept per batch and state; partial indexes on the rows a sweep can act on.

``item_counts`` holds, per batch and state, the number of items, their audio milliseconds
and the latest ``finished_at``: ``status`` and the console read a few rows instead of
counting a million. Triggers keep it in the same transaction as every insert, move and
delete of an item, so it is exact whatever path changed the row (compare-and-set moves,
COPY intake, bulk retries, gc).

PostgreSQL: triggers append signed deltas (inserts and deletes: one row per batch and state
a statement touched, through transition tables; moves: two rows each), never updating a
shared row, so concurrent moves neither wait on one another nor deadlock; readers sum the
deltas and fold them together now and then (``pipeline/ledger/counts.py``). SQLite has one
writer at a time: row triggers update one row per batch and state in place.

``attempt_models`` counts, per batch, the items whose newest attempt uses each engine and
model (what ``status`` lists under "models"), kept the same way by triggers on ``attempts``:
an attempt added supersedes the item's previous one; deleting an item's newest attempt
hands the count back to the one before it, if any. Items whose key starts with "@" (lines
that were not valid) are not counted.

``ix_items_due`` and ``ix_items_leased`` cover only the states a sweep can act on (waiting
and claimed), so the sweep reads the rows in flight, not the millions finished.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WAITING = "state IN ('PENDING', 'PREPARED', 'SUBMITTED')"
CLAIMED = "state IN ('PREPARING', 'TRANSCRIBING', 'SUBMITTING', 'PERSISTING')"

BACKFILL_MODELS = """
INSERT INTO attempt_models (batch_id, engine, model, n)
SELECT i.batch_id, a.engine, a.model, count(*)
FROM items i JOIN attempts a ON a.item_id = i.id AND a.number = i.attempt
WHERE substr(i.key, 1, 1) <> '@'
GROUP BY i.batch_id, a.engine, a.model
"""

BACKFILL = """
INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
SELECT batch_id, state, count(*), coalesce(sum(audio_duration_ms), 0), max(finished_at)
FROM items GROUP BY batch_id, state
"""

PG_FUNCTIONS = """
CREATE FUNCTION item_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
    SELECT batch_id, state, count(*), coalesce(sum(audio_duration_ms), 0), max(finished_at)
    FROM new_rows GROUP BY batch_id, state;
    RETURN NULL;
END $$;

CREATE FUNCTION item_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
    SELECT batch_id, state, -count(*), -coalesce(sum(audio_duration_ms), 0), NULL
    FROM old_rows GROUP BY batch_id, state;
    RETURN NULL;
END $$;

-- A row trigger with a WHEN clause: an UPDATE that leaves batch, state, audio length and
-- finish time alone (lease renewals, bookkeeping) is filtered out before any function
-- runs; a move adds two delta rows.
CREATE FUNCTION item_counts_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at) VALUES
        (OLD.batch_id, OLD.state, -1, -coalesce(OLD.audio_duration_ms, 0), NULL),
        (NEW.batch_id, NEW.state, 1, coalesce(NEW.audio_duration_ms, 0), NEW.finished_at);
    RETURN NULL;
END $$;

CREATE FUNCTION attempt_models_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
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
        WHERE substr(i.key, 1, 1) <> '@'
    ) AS d
    GROUP BY batch_id, engine, model
    HAVING sum(n) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION attempt_models_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Each deleted newest attempt counts no more; the item's newest remaining one, if
    -- any, counts instead.
    INSERT INTO attempt_models (batch_id, engine, model, n)
    SELECT gone.batch_id, d.engine, d.model, sum(d.n)
    FROM (
        SELECT i.batch_id, o.item_id, o.engine AS old_engine, o.model AS old_model
        FROM old_rows o JOIN items i ON i.id = o.item_id
        WHERE substr(i.key, 1, 1) <> '@'
          AND NOT EXISTS (SELECT 1 FROM old_rows o2
                          WHERE o2.item_id = o.item_id AND o2.number > o.number)
          AND NOT EXISTS (SELECT 1 FROM attempts a
                          WHERE a.item_id = o.item_id AND a.number > o.number)
    ) AS gone
    LEFT JOIN LATERAL (
        SELECT a.engine AS back_engine, a.model AS back_model FROM attempts a
        WHERE a.item_id = gone.item_id ORDER BY a.number DESC LIMIT 1
    ) AS back ON true
    CROSS JOIN LATERAL (
        VALUES (gone.old_engine, gone.old_model, -1),
               (back.back_engine, back.back_model, 1)
    ) AS d (engine, model, n)
    WHERE d.engine IS NOT NULL
    GROUP BY gone.batch_id, d.engine, d.model
    HAVING sum(d.n) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER attempts_counted_insert AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION attempt_models_inserted();
CREATE TRIGGER attempts_counted_delete AFTER DELETE ON attempts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION attempt_models_deleted();

CREATE TRIGGER items_counted_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_counts_inserted();
CREATE TRIGGER items_counted_update
    AFTER UPDATE OF batch_id, state, audio_duration_ms, finished_at ON items
    FOR EACH ROW WHEN (
        (OLD.batch_id, OLD.state, OLD.audio_duration_ms, OLD.finished_at)
        IS DISTINCT FROM (NEW.batch_id, NEW.state, NEW.audio_duration_ms, NEW.finished_at))
    EXECUTE FUNCTION item_counts_moved();
CREATE TRIGGER items_counted_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_counts_deleted();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS items_counted_insert ON items;
DROP TRIGGER IF EXISTS items_counted_update ON items;
DROP TRIGGER IF EXISTS items_counted_delete ON items;
DROP FUNCTION IF EXISTS item_counts_inserted();
DROP FUNCTION IF EXISTS item_counts_moved();
DROP FUNCTION IF EXISTS item_counts_deleted();
DROP TRIGGER IF EXISTS attempts_counted_insert ON attempts;
DROP TRIGGER IF EXISTS attempts_counted_delete ON attempts;
DROP FUNCTION IF EXISTS attempt_models_inserted();
DROP FUNCTION IF EXISTS attempt_models_deleted();
"""

# SQLite: add (sign, row) to its batch and state's one row, made first if missing (one
# writer at a time, so the check and the update cannot interleave with another's).
_ADD = """
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
    SELECT {r}.batch_id, {r}.state, 0, 0, NULL WHERE NOT EXISTS (
        SELECT 1 FROM item_counts WHERE batch_id = {r}.batch_id AND state = {r}.state);
    UPDATE item_counts SET
        n = n {sign} 1,
        audio_ms = audio_ms {sign} coalesce({r}.audio_duration_ms, 0),
        last_at = CASE WHEN {last} > last_at OR last_at IS NULL THEN {last} ELSE last_at END
    WHERE batch_id = {r}.batch_id AND state = {r}.state;
"""
ADD_NEW = _ADD.format(r="NEW", sign="+", last="NEW.finished_at")
TAKE_OLD = _ADD.format(r="OLD", sign="-", last="last_at")

# The item's batch, when it is counted at all (its key does not start with "@").
_COUNTED = "(SELECT batch_id FROM items WHERE id = {r}.item_id AND substr(key, 1, 1) <> '@')"
_MODEL_ADD = """
    INSERT INTO attempt_models (batch_id, engine, model, n)
    SELECT b, {e}, {m}, 0 FROM (SELECT {batch} AS b)
    WHERE b IS NOT NULL AND {e} IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM attempt_models WHERE batch_id = b AND engine = {e} AND model = {m});
    UPDATE attempt_models SET n = n {sign} 1
    WHERE batch_id = {batch} AND engine = {e} AND model = {m};
"""
_PREVIOUS = "(SELECT {c} FROM attempts WHERE item_id = NEW.item_id AND number = NEW.number - 1)"
_BACK = "(SELECT {c} FROM attempts WHERE item_id = OLD.item_id ORDER BY number DESC LIMIT 1)"
MODEL_TRIGGERS = (
    "CREATE TRIGGER attempts_counted_insert AFTER INSERT ON attempts BEGIN"
    + _MODEL_ADD.format(batch=_COUNTED.format(r="NEW"), e="NEW.engine", m="NEW.model", sign="+")
    + _MODEL_ADD.format(
        batch=_COUNTED.format(r="NEW"),
        e=_PREVIOUS.format(c="engine"),
        m=_PREVIOUS.format(c="model"),
        sign="-",
    )
    + "END",
    # Only the item's newest attempt counts; the one before it (if any) counts again.
    "CREATE TRIGGER attempts_counted_delete AFTER DELETE ON attempts WHEN NOT EXISTS ("
    "SELECT 1 FROM attempts WHERE item_id = OLD.item_id AND number > OLD.number) BEGIN"
    + _MODEL_ADD.format(batch=_COUNTED.format(r="OLD"), e="OLD.engine", m="OLD.model", sign="-")
    + _MODEL_ADD.format(
        batch=_COUNTED.format(r="OLD"),
        e=_BACK.format(c="engine"),
        m=_BACK.format(c="model"),
        sign="+",
    )
    + "END",
)

SQLITE_TRIGGERS = (
    f"CREATE TRIGGER items_counted_insert AFTER INSERT ON items BEGIN {ADD_NEW} END",
    "CREATE TRIGGER items_counted_update"
    " AFTER UPDATE OF batch_id, state, audio_duration_ms, finished_at ON items"
    " WHEN OLD.batch_id IS NOT NEW.batch_id OR OLD.state IS NOT NEW.state"
    " OR OLD.audio_duration_ms IS NOT NEW.audio_duration_ms"
    " OR OLD.finished_at IS NOT NEW.finished_at"
    f" BEGIN {TAKE_OLD} {ADD_NEW} END",
    f"CREATE TRIGGER items_counted_delete AFTER DELETE ON items BEGIN {TAKE_OLD} END",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "item_counts",
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("audio_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Deltas (PostgreSQL) are many rows per batch and state; SQLite keeps one.
    op.create_index("ix_item_counts_batch_state", "item_counts", ["batch_id", "state"])
    op.create_table(
        "attempt_models",
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_attempt_models_batch", "attempt_models", ["batch_id", "engine", "model"])
    op.execute(BACKFILL)
    op.execute(BACKFILL_MODELS)
    if postgres:
        op.execute(PG_FUNCTIONS)
    else:
        for trigger in (*SQLITE_TRIGGERS, *MODEL_TRIGGERS):
            op.execute(trigger)
    where_waiting, where_claimed = sa.text(WAITING), sa.text(CLAIMED)
    op.create_index(
        "ix_items_due",
        "items",
        ["next_run_at", "created_at"],
        postgresql_where=where_waiting,
        sqlite_where=where_waiting,
    )
    op.create_index(
        "ix_items_leased",
        "items",
        ["lease_until"],
        postgresql_where=where_claimed,
        sqlite_where=where_claimed,
    )


def downgrade() -> None:
    op.drop_index("ix_items_leased", table_name="items")
    op.drop_index("ix_items_due", table_name="items")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_DROP)
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS items_counted_{name}")
        for name in ("insert", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS attempts_counted_{name}")
    op.drop_table("attempt_models")
    op.drop_table("item_counts")
