"""The sweep's writes on the ledger, read through the partial indexes of migration 0009.

A sweep runs under a Redis lock, but the lock can lapse under a slow sweep and a worker may
be renewing the very lease a sweep finds expired. Releasing is therefore one statement that
locks the rows it takes with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL): two sweepers that meet
share the work instead of waiting on each other, a row a worker holds is left to the next
sweep, and each row still moves only from the state it was read in (compare-and-set).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, and_, bindparam, case, select, update

from pipeline.ledger.rows import utcnow
from pipeline.ledger.tables import items
from pipeline.states import CLAIMED_FROM, ItemState, can_move

# SUBMITTING is left alone: whether its task exists is for reconciliation to find out, not
# for a timer to assume.
RELEASABLE: dict[ItemState, ItemState] = {
    old: new for old, new in CLAIMED_FROM.items() if old is not ItemState.SUBMITTING
}
# These moves bypass Ledger.move (one statement for all rows): checked against the state
# table here, once, so a change to the table cannot leave them behind unnoticed.
assert all(can_move(old, new) for old, new in RELEASABLE.items()), "RELEASABLE vs ALLOWED"


def release_expired(
    engine: Engine, *, now: datetime | None = None, limit: int = 5000
) -> list[tuple[str, ItemState]]:
    """Claims whose lease ran out fall back to the state they were claimed from, due at
    once (the mark written when their step was queued may lie far ahead). Returns (item id,
    the claimed state it left) for each row released, at most ``limit`` per call."""
    now = now or utcnow()
    stale = (
        select(items.c.id, items.c.state)
        # The state list is the partial index's own (ix_items_leased), so the planner can
        # prove the index applies; the claims that are not releasable are filtered after.
        .where(
            items.c.state.in_([s.value for s in CLAIMED_FROM]),
            items.c.lease_until < bindparam("now"),
            items.c.state.in_([s.value for s in RELEASABLE]),
        )
        .limit(limit)
    )
    moved = {"lease_owner": None, "lease_until": None, "next_run_at": None, "updated_at": now}
    if engine.dialect.name != "postgresql":
        # SQLite cannot return the FROM table's columns: read, then move each row from the
        # state it was read in (statements of their own: a read that turns into a write
        # in one transaction fails at once if another writer got in between).
        with engine.connect() as conn:
            found = conn.execute(stale, {"now": now}).all()
            released = []
            for item_id, state in found:
                if conn.execute(
                    update(items)
                    .where(items.c.id == item_id, items.c.state == state)
                    .values(state=RELEASABLE[ItemState(state)].value, **moved)
                ).rowcount:
                    released.append((str(item_id), ItemState(state)))
                conn.commit()
            return released
    taken = stale.with_for_update(skip_locked=True).cte("stale")
    back = case(
        *((taken.c.state == old.value, new.value) for old, new in RELEASABLE.items()),
        else_=taken.c.state,
    )
    stmt = (
        update(items)
        .where(and_(items.c.id == taken.c.id, items.c.state == taken.c.state))
        .values(state=back, **moved)
        .returning(items.c.id, taken.c.state)
    )
    with engine.begin() as conn:
        rows = conn.execute(stmt, {"now": now}).all()
    return [(str(item_id), ItemState(state)) for item_id, state in rows]
