"""The statements of the hot paths (every step of every item), built once.

Executed with a parameter dict, an UPDATE without ``.values()`` sets the columns named in
it; the WHERE clause takes ``w_*`` parameters. A reused statement object skips construction
and cache-key generation, which is about half of SQLAlchemy's client CPU per statement.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    JSON,
    Select,
    TextClause,
    Update,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql

from pipeline.ledger.tables import attempts, batches, items
from pipeline.states import TERMINAL, ItemState


@functools.cache
def cas(*, owner: bool = False, lease_before: bool = False, returning: str = "") -> Update:
    """UPDATE items … WHERE id = :w_id AND state = :w_state [AND owner] [AND lease <]."""
    cond = [items.c.id == bindparam("w_id"), items.c.state == bindparam("w_state")]
    if owner:
        cond.append(items.c.lease_owner == bindparam("w_owner"))
    if lease_before:
        cond.append(items.c.lease_until < bindparam("w_lease_before"))
    stmt = update(items).where(and_(*cond))
    if returning == "row":
        return stmt.returning(*items.c)
    if returning == "attempt":
        return stmt.returning(items.c.attempt, items.c.timings)
    return stmt


@functools.cache
def cas_closing(
    *, owner: bool, lease_before: bool, item_keys: tuple[str, ...], attempt_keys: tuple[str, ...]
) -> Update:
    """PostgreSQL: an item's compare-and-set and its attempt's facts in one statement (the
    item's UPDATE as a data-modifying CTE): no BEGIN/COMMIT round trips. A row comes back
    only if the item moved. Item values are ``i_*`` parameters, attempt values ``a_*``; an
    attempt given no timings keeps the item's."""
    moved = (
        cas(owner=owner, lease_before=lease_before)
        .values({k: bindparam(f"i_{k}", type_=items.c[k].type) for k in item_keys})
        .returning(items.c.attempt, items.c.timings)
        .cte("moved")
    )
    closing: dict[str, Any] = {
        k: bindparam(f"a_{k}", type_=attempts.c[k].type) for k in attempt_keys
    }
    closing.setdefault("timings", func.coalesce(moved.c.timings, literal({}, JSON)))
    return (
        update(attempts)
        .where(and_(attempts.c.item_id == bindparam("w_id"), attempts.c.number == moved.c.attempt))
        .values(closing)
        .returning(attempts.c.number)
    )


@functools.cache
def cas_rows(
    *, owner: bool, item_keys: tuple[str, ...], attempt_keys: tuple[str, ...]
) -> TextClause:
    """PostgreSQL: the compare-and-set of many items at once, each with values of its own
    (and its attempt's facts, as :func:`cas_closing`), in one statement. The rows come as
    one JSON array (``:rows``) of objects with ``w_id``, ``i_<column>`` and ``a_<column>``
    keys, typed by ``json_to_recordset`` (a JSON null is SQL NULL); all are in state
    ``:w_state`` [and held by ``:w_owner``]. Returns the ids of the items moved (whose
    attempt was updated too, when ``attempt_keys``)."""
    pg = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql_type(table: Any, key: str) -> str:
        return str(table.c[key].type.compile(dialect=pg))

    record = ", ".join(
        ["w_id varchar"]
        + [f"i_{k} {sql_type(items, k)}" for k in item_keys]
        + [f"a_{k} {sql_type(attempts, k)}" for k in attempt_keys]
    )
    sets = ", ".join(f'"{k}" = v.i_{k}' for k in item_keys)
    guard = " AND items.lease_owner = :w_owner" if owner else ""
    sql = (
        f"WITH v AS (SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v({record})),"
        f" moved AS (UPDATE items SET {sets} FROM v"
        f" WHERE items.id = v.w_id AND items.state = :w_state{guard}"
        " RETURNING items.id, items.attempt, items.timings)"
    )
    if not attempt_keys:
        return text(sql + " SELECT id FROM moved")
    closing = [f'"{k}" = v.a_{k}' for k in attempt_keys]
    if "timings" not in attempt_keys:  # as cas_closing: the item's, as just stored
        closing.append("timings = COALESCE(moved.timings, CAST('{}' AS json))")
    return text(
        sql + f" UPDATE attempts SET {', '.join(closing)} FROM moved JOIN v ON v.w_id = moved.id"
        " WHERE attempts.item_id = moved.id AND attempts.number = moved.attempt"
        " RETURNING attempts.item_id"
    )


@functools.cache
def select_items(by: str) -> Select[Any]:
    if by == "ids":
        return select(items).where(items.c.id.in_(bindparam("w_ids", expanding=True)))
    if by == "tasks":
        return (
            select(items)
            .where(items.c.provider_task_id.in_(bindparam("w_values", expanding=True)))
            .order_by(items.c.line_no)
        )
    return select(items).where(items.c[by] == bindparam("w_value")).order_by(items.c.line_no)


MARK_DUE = update(items).where(
    and_(items.c.id.in_(bindparam("w_ids", expanding=True)), items.c.state == bindparam("w_state"))
)
# Many rows claimed with the same values: one statement, the rows taken returned.
CLAIM_MANY = MARK_DUE.returning(*items.c)
# Rows handed out only if still due: the compare-and-set of a queued mark.
TAKE_DUE = (
    update(items)
    .where(
        and_(
            items.c.id.in_(bindparam("w_ids", expanding=True)),
            items.c.state == bindparam("w_state"),
            or_(items.c.next_run_at.is_(None), items.c.next_run_at <= bindparam("w_before")),
        )
    )
    .returning(items.c.id)
)
# The reset that starts a new attempt (``sync_items``): guarded by the state and the attempt
# number read, so a worker's move, or another new attempt, made since is never overwritten.
NEW_ATTEMPT = update(items).where(
    and_(
        items.c.id == bindparam("w_id"),
        items.c.state == bindparam("w_state"),
        items.c.attempt == bindparam("w_attempt"),
    )
)
CLOSE_ATTEMPT = update(attempts).where(
    and_(attempts.c.item_id == bindparam("w_id"), attempts.c.number == bindparam("w_number"))
)
# Whether any unfinished item still needs the stored audio: EXISTS stops at the first
# one (a count read every item that ever used the same audio, finished ones included).
IN_USE = select(
    exists().where(
        and_(
            items.c.media_key == bindparam("w_key"),
            items.c.state.not_in([s.value for s in TERMINAL]),
        )
    )
)
# The same for several keys at once (PostgreSQL): those of them still needed, each found by
# an EXISTS that stops at its first unfinished item, as IN_USE does.
KEYS_IN_USE = text(
    "SELECT k FROM unnest(CAST(:w_keys AS text[])) AS k WHERE EXISTS (SELECT 1 FROM items"
    " WHERE items.media_key = k AND items.state NOT IN ("
    + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
    + "))"
)
INFLIGHT = select(
    select(func.count(func.distinct(items.c.provider_task_id)))
    .where(items.c.state.in_([ItemState.SUBMITTED.value, ItemState.PERSISTING.value]))
    .scalar_subquery()
    + select(func.count()).where(items.c.state == ItemState.SUBMITTING.value).scalar_subquery()
)
# A batch's close claimed by the worker finishing an item (BatchStore.claim_batch_close):
# the batch is not done, all of its items are entered and finished, and no one else holds
# the claim. Sets the ``closing_by``/``closing_until`` parameters.
CLAIM_CLOSE = update(batches).where(
    and_(
        batches.c.id == bindparam("w_batch"),
        batches.c.done_at.is_(None),
        batches.c.intake_at.is_(None),  # submit is still entering items
        or_(batches.c.closing_until.is_(None), batches.c.closing_until < bindparam("w_now")),
        ~select(items.c.id)
        .where(
            and_(
                items.c.batch_id == bindparam("w_batch"),
                items.c.state.in_([s.value for s in ItemState if s not in TERMINAL]),
            )
        )
        .exists(),
    )
)
