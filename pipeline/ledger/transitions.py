"""Transitions: every state change is one UPDATE guarded by the state the caller expects.

Each is checked against the transition table (``states.ALLOWED``) before any SQL: a move
the table does not allow raises :class:`TransitionRefused`. ``False``/``None`` means only
that someone else got there first (the compare-and-set lost). A new attempt
(:mod:`pipeline.ledger.item_store`) is checked by :func:`check_new_attempt` instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Unpack

from sqlalchemy import Connection, and_, update

from pipeline.errors import TransitionRefused
from pipeline.ledger.base import LedgerBase
from pipeline.ledger.rows import (
    AttemptColumns,
    ItemColumns,
    ItemRow,
    attempt_end,
    check_columns,
    item_params,
    utcnow,
)
from pipeline.ledger.statements import (
    CLAIM_MANY,
    CLOSE_ATTEMPT,
    MARK_DUE,
    TAKE_DUE,
    cas,
    cas_closing,
    cas_rows,
)
from pipeline.ledger.sweep import release_expired
from pipeline.ledger.tables import attempts, items
from pipeline.ledger.values import Failure
from pipeline.states import TERMINAL, ItemState, can_move, can_start_attempt


def check_move(expected: ItemState, to: ItemState) -> None:
    if not can_move(expected, to):
        raise TransitionRefused(f"{expected.value} -> {to.value} is not an allowed transition")


def check_new_attempt(expected: ItemState, to: ItemState, *, running: bool = False) -> None:
    """A new attempt from ``expected`` into ``to`` (``states.can_start_attempt``)."""
    if not can_start_attempt(expected, to, running=running):
        raise TransitionRefused(
            f"a new attempt from {expected.value} into {to.value} is not allowed"
        )


def _ids_by_state(rows: Iterable[ItemRow]) -> dict[ItemState, list[str]]:
    """Rows' ids grouped by the state they were read in: one guarded statement per state."""
    by_state: dict[ItemState, list[str]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row.id)
    return by_state


def _move_columns(values: ItemColumns, to: ItemState, now: datetime) -> dict[str, Any]:
    """What a move into ``to`` writes: ``values``, and leaving a claimed state drops the
    lease; a terminal state is finished and due for nothing more."""
    columns = item_params(values)
    if not to.claimed:
        columns.setdefault("lease_owner", None)
        columns.setdefault("lease_until", None)
    if to in TERMINAL:
        columns.setdefault("finished_at", now)
        columns.setdefault("next_run_at", None)
    columns["state"] = to.value
    columns["updated_at"] = now
    return columns


class Move(NamedTuple):
    """One item's part of :meth:`TransitionStore.move_many`: its id, the columns it sets,
    and its attempt's facts (or None)."""

    item_id: str
    values: ItemColumns
    attempt: AttemptColumns | None = None


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not a ledger value: {type(value).__name__}")


class TransitionStore(LedgerBase):
    def claim(
        self,
        item_id: str,
        expected: ItemState,
        to: ItemState,
        *,
        owner: str,
        lease_s: float,
        **values: Unpack[ItemColumns],
    ) -> ItemRow | None:
        """CAS ``expected`` → claimed ``to`` with a lease (and ``values``); None if someone
        else has it."""
        check_move(expected, to)
        check_columns(values)
        now = utcnow()
        params = {
            **item_params(values),
            "w_id": item_id,
            "w_state": expected.value,
            "state": to.value,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_s),
            "updated_at": now,
        }
        with self._single.connect() as conn:  # the claimed row comes back in the same trip
            row = conn.execute(cas(returning="row"), params).first()
        return ItemRow.from_row(row) if row is not None else None

    def claim_many(
        self,
        item_ids: Sequence[str],
        expected: ItemState,
        to: ItemState,
        *,
        owner: str,
        lease_s: float,
    ) -> list[ItemRow]:
        """:meth:`claim` of several items at once (the same values for each), in one
        statement: the rows this caller now holds."""
        check_move(expected, to)
        if not item_ids:
            return []
        now = utcnow()
        params = {
            "w_ids": list(item_ids),
            "w_state": expected.value,
            "state": to.value,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_s),
            "updated_at": now,
        }
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(CLAIM_MANY, params)]

    def renew(self, item_id: str, state: ItemState, *, owner: str, lease_s: float) -> bool:
        return self._update(
            item_id, state, owner, {"lease_until": utcnow() + timedelta(seconds=lease_s)}
        )

    def move(
        self,
        item_id: str,
        expected: ItemState,
        to: ItemState,
        *,
        owner: str | None = None,
        attempt: AttemptColumns | None = None,
        then: Callable[[Connection, str], object] | None = None,
        **values: Unpack[ItemColumns],
    ) -> bool:
        """CAS ``expected`` → ``to``; leaving a claimed state also drops the lease.

        ``attempt``: facts for the current attempt (its task id, its end), written in the
        same transaction when the move succeeds; ``then`` (with ``attempt``) runs in that
        transaction too, after the move. A move the state table does not allow raises
        :class:`TransitionRefused`, whatever the row's state.
        """
        check_move(expected, to)
        check_columns(values, attempt)
        columns = _move_columns(values, to, utcnow())
        return self._update(item_id, expected, owner, columns, attempt=attempt, then=then)

    def move_many(
        self,
        moves: Sequence[Move],
        expected: ItemState,
        to: ItemState,
        *,
        owner: str | None = None,
    ) -> set[str]:
        """:meth:`move` of several items from the same state, each with values of its own:
        the ids of those moved. On PostgreSQL one statement per shape of values (usually
        one in all), not one per item; elsewhere one move each."""
        check_move(expected, to)
        for move in moves:
            check_columns(move.values, move.attempt)
        if self.engine.dialect.name != "postgresql":
            return {
                m.item_id
                for m in moves
                if self.move(m.item_id, expected, to, owner=owner, attempt=m.attempt, **m.values)
            }
        now = utcnow()
        shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
        for move in moves:
            columns = _move_columns(move.values, to, now)
            attempt = dict(move.attempt or {})
            shape = (tuple(sorted(columns)), tuple(sorted(attempt)))
            shapes.setdefault(shape, []).append(
                {
                    "w_id": move.item_id,
                    **{f"i_{k}": v for k, v in columns.items()},
                    **{f"a_{k}": v for k, v in attempt.items()},
                }
            )
        moved: set[str] = set()
        with self._single.connect() as conn:
            for (item_keys, attempt_keys), rows in shapes.items():
                stmt = cas_rows(
                    owner=owner is not None, item_keys=item_keys, attempt_keys=attempt_keys
                )
                params = {
                    "rows": json.dumps(rows, default=_json_value),
                    "w_state": expected.value,
                    "w_owner": owner,
                }
                moved.update(conn.execute(stmt, params).scalars())
        return moved

    def fail(
        self,
        item_id: str,
        expected: ItemState,
        failure: Failure,
        *,
        dead: bool = False,
        owner: str | None = None,
    ) -> bool:
        """FAILED (or DEAD: retries ran out, distributed) with ``failure``, on the item and
        on its current attempt."""
        to = ItemState.DEAD if dead else ItemState.FAILED
        return self.move(
            item_id,
            expected,
            to,
            owner=owner,
            failure=failure,
            attempt=attempt_end(to, failure),
            then=self.on_dead if dead else None,
        )

    def adopt_task(
        self, task_id: str, media_urls: Sequence[str], *, submitted_at: datetime
    ) -> list[str]:
        """SUBMITTING items whose URL a found provider task holds → SUBMITTED with its id.

        One transaction, so no reader ever sees the task recorded for some of its files
        and not yet for the others (reconciliation skips tasks the ledger already knows).
        Returns the ids of the items moved.
        """
        if not media_urls:
            return []
        check_move(ItemState.SUBMITTING, ItemState.SUBMITTED)
        now = utcnow()
        with self.engine.begin() as conn:
            moved = list(
                conn.execute(
                    update(items)
                    .where(
                        and_(
                            items.c.state == ItemState.SUBMITTING.value,
                            items.c.media_url.in_(list(media_urls)),
                        )
                    )
                    .values(
                        state=ItemState.SUBMITTED.value,
                        provider_task_id=task_id,
                        submitted_at=submitted_at,
                        polls=0,
                        next_run_at=now,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                    .returning(items.c.id, items.c.attempt)
                )
            )
            for item_id, number in moved:
                conn.execute(
                    update(attempts)
                    .where(and_(attempts.c.item_id == item_id, attempts.c.number == number))
                    .values(provider_task_id=task_id)
                )
        return [item_id for item_id, _ in moved]

    def release_expired(self, *, now: datetime | None = None) -> list[tuple[str, ItemState]]:
        """Claims whose lease ran out fall back to the state they were claimed from (one
        statement, :func:`pipeline.ledger.sweep.release_expired`)."""
        return release_expired(self.engine, now=now)

    def update_if(self, item_id: str, state: ItemState, **values: Unpack[ItemColumns]) -> bool:
        """Bookkeeping guarded by the state only (retry counters, poll schedule)."""
        check_columns(values)
        return self._update(item_id, state, None, {**item_params(values), "updated_at": utcnow()})

    def set_fields(self, item_id: str, **values: Unpack[ItemColumns]) -> None:
        """Unguarded bookkeeping (probe facts, counters) that no transition depends on."""
        check_columns(values)
        with self._single.connect() as conn:
            conn.execute(
                update(items)
                .where(items.c.id == item_id)
                .values(updated_at=utcnow(), **item_params(values))
            )

    def mark_due(self, rows: Iterable[ItemRow], at: datetime, **values: Unpack[ItemColumns]) -> int:
        """``next_run_at = at`` (and ``values``) for these rows, each only while still in
        the state read; one statement per state."""
        check_columns(values)
        columns = item_params(values)
        marked = 0
        with self._single.connect() as conn:
            for state, ids in _ids_by_state(rows).items():
                marked += conn.execute(
                    MARK_DUE,
                    {
                        **columns,
                        "w_ids": ids,
                        "w_state": state.value,
                        "next_run_at": at,
                        "updated_at": utcnow(),
                    },
                ).rowcount
        return marked

    def take_due(self, rows: Iterable[ItemRow], *, before: datetime, until: datetime) -> list[str]:
        """Mark these rows queued (``next_run_at = until``), each only while it is still in
        the state read and due by ``before``: the ids of those taken. Two workers handing
        out the same waiting rows each get a share, never the same row."""
        taken: list[str] = []
        with self._single.connect() as conn:
            for state, ids in _ids_by_state(rows).items():
                taken += conn.execute(
                    TAKE_DUE,
                    {
                        "w_ids": ids,
                        "w_state": state.value,
                        "w_before": before,
                        "next_run_at": until,
                        "updated_at": utcnow(),
                    },
                ).scalars()
        return taken

    def _update(
        self,
        item_id: str,
        expected: ItemState,
        owner: str | None,
        columns: dict[str, Any],
        *,
        guard_lease_before: datetime | None = None,
        attempt: Mapping[str, Any] | None = None,
        then: Callable[[Connection, str], object] | None = None,
    ) -> bool:
        """One compare-and-set of ``columns`` (column names, checked by the callers)."""
        where: dict[str, Any] = {"w_id": item_id, "w_state": expected.value}
        if owner is not None:
            where["w_owner"] = owner
        if guard_lease_before is not None:
            where["w_lease_before"] = guard_lease_before
        shape = {"owner": owner is not None, "lease_before": guard_lease_before is not None}
        if not attempt:
            with self._single.connect() as conn:
                return conn.execute(cas(**shape), {**where, **columns}).rowcount == 1
        if self.engine.dialect.name == "postgresql":
            stmt = cas_closing(
                **shape, item_keys=tuple(sorted(columns)), attempt_keys=tuple(sorted(attempt))
            )
            params = {
                **where,
                **{f"i_{k}": v for k, v in columns.items()},
                **{f"a_{k}": v for k, v in attempt.items()},
            }
            if then is None:
                with self._single.connect() as conn:
                    return conn.execute(stmt, params).first() is not None
            with self.engine.begin() as conn:
                if conn.execute(stmt, params).first() is None:
                    return False
                then(conn, item_id)
                return True
        with self.engine.begin() as conn:  # SQLite: no DML in a CTE
            moved = conn.execute(cas(**shape, returning="attempt"), {**where, **columns}).first()
            if moved is None:
                return False
            # An attempt closed without timings of its own keeps the item's (as just stored).
            closing = {"timings": dict(moved.timings or {}), **attempt}
            conn.execute(CLOSE_ATTEMPT, {"w_id": item_id, "w_number": moved.attempt, **closing})
            if then is not None:
                then(conn, item_id)
            return True
