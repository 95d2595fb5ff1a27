"""Item counts kept per batch and state; partial indexes on the rows a sweep can act on.

``item_counts`` holds, per batch and state, the number of items, their audio milliseconds
and the latest ``finished_at``: ``status`` and the console read a few rows instead of
counting a million. Triggers keep it in the same transaction as every insert, move and
delete of an item, so it is exact whatever path changed the row (compare-and-set moves,
COPY intake, bulk retries, gc).

PostgreSQL: statement triggers with transition tables append signed deltas (one row per
batch and state a statement touched), never updating a shared row, so concurrent moves
neither wait on one another nor deadlock; readers sum the deltas and fold them together
now and then (``pipeline/ledger/counts.py``). SQLite has one writer at a time: row triggers
update one row per batch and state in place.

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

-- Fires for every UPDATE of items (PostgreSQL allows no column list with transition
-- tables): rows whose batch, state, audio length and finish time are unchanged add nothing.
CREATE FUNCTION item_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
    SELECT batch_id, state, sum(n), sum(ms), max(last_at)
    FROM (
        SELECT o.batch_id, o.state, -1 AS n, -coalesce(o.audio_duration_ms, 0) AS ms,
               NULL::timestamptz AS last_at
        FROM old_rows o JOIN new_rows w ON w.id = o.id
        WHERE (o.batch_id, o.state, o.audio_duration_ms, o.finished_at)
              IS DISTINCT FROM (w.batch_id, w.state, w.audio_duration_ms, w.finished_at)
        UNION ALL
        SELECT w.batch_id, w.state, 1, coalesce(w.audio_duration_ms, 0), w.finished_at
        FROM old_rows o JOIN new_rows w ON w.id = o.id
        WHERE (o.batch_id, o.state, o.audio_duration_ms, o.finished_at)
              IS DISTINCT FROM (w.batch_id, w.state, w.audio_duration_ms, w.finished_at)
    ) AS d
    GROUP BY batch_id, state
    HAVING sum(n) <> 0 OR sum(ms) <> 0 OR max(last_at) IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER items_counted_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_counts_inserted();
CREATE TRIGGER items_counted_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_counts_updated();
CREATE TRIGGER items_counted_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_counts_deleted();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS items_counted_insert ON items;
DROP TRIGGER IF EXISTS items_counted_update ON items;
DROP TRIGGER IF EXISTS items_counted_delete ON items;
DROP FUNCTION IF EXISTS item_counts_inserted();
DROP FUNCTION IF EXISTS item_counts_updated();
DROP FUNCTION IF EXISTS item_counts_deleted();
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
    op.execute(BACKFILL)
    if postgres:
        op.execute(PG_FUNCTIONS)
    else:
        for trigger in SQLITE_TRIGGERS:
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
    op.drop_table("item_counts")
