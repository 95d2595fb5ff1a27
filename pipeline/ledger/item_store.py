"""Items and their attempts: entering a manifest, starting new attempts, reading rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from pipeline.errors import FailureCode, code_retryable
from pipeline.ledger.base import LedgerBase
from pipeline.ledger.rows import (
    NO_FAILURE_COLUMNS,
    ItemRow,
    ItemSeed,
    SyncReport,
    attempt_values,
    utcnow,
)
from pipeline.ledger.statements import NEW_ATTEMPT, select_items
from pipeline.ledger.tables import attempts, batches, items
from pipeline.ledger.transitions import check_new_attempt
from pipeline.ledger.values import Failure, ItemRequest
from pipeline.states import ItemState, can_start_attempt


def fresh_attempt(number: int, state: ItemState) -> dict[str, Any]:
    """The columns a new attempt sets: nothing of the last attempt's work (its tries, lease,
    provider task, stored audio, timings) carries over."""
    return dict(
        state=state.value,
        attempt=number,
        tries=0,
        polls=0,
        lease_owner=None,
        lease_until=None,
        next_run_at=None,
        provider_task_id=None,
        submitted_at=None,
        media_key=None,
        media_url=None,
        timings=None,
    )


class ItemStore(LedgerBase):
    def sync_items(
        self,
        batch_id: str,
        seeds: Sequence[ItemSeed],
        *,
        engine: str,
        model: str,
        force: bool = False,
        restart_running: bool = True,
    ) -> SyncReport:
        """Insert new items; start a new attempt for items whose spec or source changed.

        A new attempt starts only where ``states.can_start_attempt`` allows it: from a
        finished item; from an unfinished one that no worker holds only with
        ``restart_running`` (False: a distributed item in flight may be mid-submission, and
        is left to finish as it is); never from a claimed one. Each reset is a
        compare-and-set on the state and attempt read, so a worker's move in between is
        never overwritten. Rows left as they are for either reason count as unchanged and are
        named in the report's ``kept``.
        """
        now = utcnow()
        reset = unchanged = 0
        refused: list[str] = []
        kept: list[str] = []
        new_items: list[dict[str, Any]] = []
        new_attempts: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            existing = {
                r.key: r
                for r in conn.execute(
                    select(
                        items.c.id,
                        items.c.key,
                        items.c.state,
                        items.c.fingerprint,
                        items.c.source_stamp,
                        items.c.attempt,
                    ).where(items.c.batch_id == batch_id)
                )
            }
            for seed in seeds:
                old = existing.get(seed.key)
                state = ItemState.FAILED if seed.failure else ItemState.PENDING
                # A line that cannot become an item is permanent (manifest_invalid, ...).
                error = (
                    Failure.permanent(*seed.failure).columns()
                    if seed.failure
                    else dict(NO_FAILURE_COLUMNS)
                )
                request = ItemRequest.decode(seed.spec)
                base = dict(
                    line_no=seed.line_no,
                    source=seed.source,
                    spec=dict(seed.spec),
                    fingerprint=seed.fingerprint,
                    source_stamp=seed.source_stamp,
                    updated_at=now,
                )
                if old is None:
                    if seed.failure:
                        refused.append(seed.key)
                    item_id = uuid.uuid4().hex
                    new_items.append(
                        dict(
                            id=item_id,
                            batch_id=batch_id,
                            key=seed.key,
                            state=state.value,
                            attempt=1,
                            tries=0,
                            polls=0,
                            created_at=now,
                            finished_at=now if seed.failure else None,
                            **base,
                            **error,
                        )
                    )
                    new_attempts.append(
                        attempt_values(item_id, 1, engine, model, request, now, state)
                    )
                    continue
                was = ItemState(old.state)
                changed = (
                    old.fingerprint != seed.fingerprint or old.source_stamp != seed.source_stamp
                )
                if not (force or changed or (seed.failure and was is not ItemState.FAILED)):
                    unchanged += 1
                    continue
                if not can_start_attempt(was, state, running=restart_running):
                    kept.append(seed.key)
                    unchanged += 1
                    continue
                number = old.attempt + 1
                reset_to = dict(
                    **fresh_attempt(number, state),
                    finished_at=now if seed.failure else None,
                    **base,
                    **error,
                )
                where = {"w_id": old.id, "w_state": was.value, "w_attempt": old.attempt}
                if conn.execute(NEW_ATTEMPT, {**where, **reset_to}).rowcount != 1:
                    kept.append(seed.key)  # moved since it was read: that move stands
                    unchanged += 1
                    continue
                if seed.failure:
                    refused.append(seed.key)
                new_attempts.append(
                    attempt_values(old.id, number, engine, model, request, now, state)
                )
                reset += 1
            # New items and attempts in a statement each, not one per line (a 100,000-line
            # manifest); the statement built once serves every reset.
            if new_items:
                conn.execute(insert(items), new_items)
            if new_attempts:
                conn.execute(insert(attempts), new_attempts)
        return SyncReport(len(new_items), reset, unchanged, tuple(refused), tuple(kept))

    def restart(
        self,
        item_id: str,
        *,
        expected: ItemState | None = None,
        spec: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
        engine: str = "",
        model: str = "",
    ) -> bool:
        """A new attempt, at PENDING, for a finished item (operator retry, reprocess, DLQ
        replay, re-admission under a higher cap).

        ``expected``: the state the caller read the item in; a new attempt the rule
        (``states.can_start_attempt``) does not allow from it, or, without it, from the
        state read here, raises :class:`TransitionRefused` before any SQL. False: no such
        item, or it is no longer in the state read (someone else moved it first).
        Outputs of the last success stay in place until the new attempt writes its own.
        """
        if expected is not None:
            check_new_attempt(expected, ItemState.PENDING)
        row = self.get(item_id)
        if row is None or row.is_problem or (expected is not None and row.state is not expected):
            return False
        check_new_attempt(row.state, ItemState.PENDING)
        new_spec = dict(spec if spec is not None else row.spec)
        request = ItemRequest.decode(new_spec)
        now = utcnow()
        with self.engine.begin() as conn:
            done = (
                conn.execute(
                    update(items)
                    .where(
                        and_(
                            items.c.id == item_id,
                            items.c.state == row.state.value,
                            items.c.attempt == row.attempt,
                        )
                    )
                    .values(
                        **fresh_attempt(row.attempt + 1, ItemState.PENDING),
                        **NO_FAILURE_COLUMNS,
                        finished_at=None,
                        spec=new_spec,
                        fingerprint=fingerprint or row.fingerprint,
                        updated_at=now,
                    )
                ).rowcount
                == 1
            )
            if done:
                self._open_attempt(
                    conn,
                    item_id,
                    row.attempt + 1,
                    engine or request.engine_or(""),
                    model or request.model_or(""),
                    request,
                    now,
                    ItemState.PENDING,
                )
                conn.execute(
                    update(batches).where(batches.c.id == row.batch_id).values(done_at=None)
                )
        return done

    def get(self, item_id: str) -> ItemRow | None:
        with self._single.connect() as conn:
            row = conn.execute(select_items("id"), {"w_value": item_id}).first()
        return ItemRow.from_row(row) if row else None

    def get_many(self, item_ids: Iterable[str]) -> list[ItemRow]:
        """The rows that exist among ``item_ids``, in that order, in one query."""
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return []
        with self._single.connect() as conn:
            found = {
                r.id: ItemRow.from_row(r)
                for r in conn.execute(select_items("ids"), {"w_ids": wanted})
            }
        return [found[i] for i in wanted if i in found]

    def list_items(
        self,
        batch_id: str | None = None,
        *,
        states: Iterable[ItemState] | None = None,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[ItemRow]:
        query = select(items).order_by(items.c.batch_id, items.c.line_no).limit(limit)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        if keys is not None:
            query = query.where(items.c.key.in_(list(keys)))
        if states is not None:
            query = query.where(items.c.state.in_([s.value for s in states]))
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query)]

    def sources(self, batch_id: str) -> dict[str, str]:
        """Each item's key and the source it holds (problem rows too): two columns, not
        whole rows, for the start of a long manifest's run."""
        query = select(items.c.key, items.c.source).where(items.c.batch_id == batch_id)
        with self._single.connect() as conn:
            return {key: source for key, source in conn.execute(query)}

    def failed_items(self, batch_id: str, *, retryable_only: bool) -> list[ItemRow]:
        """FAILED items of a batch; with ``retryable_only``, those whose failure was
        recorded as retryable (what a plain re-run tries again)."""
        query = select(items).where(
            items.c.batch_id == batch_id, items.c.state == ItemState.FAILED.value
        )
        if retryable_only:
            # A failure recorded before the flag was kept: decided from its code, as
            # Failure.decode does.
            by_code = [c for c in FailureCode if code_retryable(c.value)]
            query = query.where(
                or_(
                    items.c.error_retryable.is_(True),
                    and_(
                        items.c.error_retryable.is_(None),
                        items.c.error_code.in_([c.value for c in by_code]),
                    ),
                )
            )
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query.order_by(items.c.line_no))]

    def counts(self, batch_id: str | None) -> dict[str, int]:
        """Items by state in one batch (or, with None, in the whole ledger)."""
        query = select(items.c.state, func.count()).group_by(items.c.state)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        with self._single.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    def by_task(self, task_id: str) -> list[ItemRow]:
        with self._single.connect() as conn:
            rows = conn.execute(select_items("provider_task_id"), {"w_value": task_id})
            return [ItemRow.from_row(r) for r in rows]

    def by_tasks(self, task_ids: Iterable[str]) -> dict[str, list[ItemRow]]:
        """:meth:`by_task` for several provider tasks in one query: each id given maps to
        its rows (none: an empty list), in manifest order."""
        found: dict[str, list[ItemRow]] = {t: [] for t in dict.fromkeys(task_ids)}
        if not found:
            return found
        with self._single.connect() as conn:
            for r in conn.execute(select_items("tasks"), {"w_values": list(found)}):
                row = ItemRow.from_row(r)
                found[str(row.provider_task_id)].append(row)
        return found

    def _open_attempt(
        self,
        conn: Any,
        item_id: str,
        number: int,
        engine: str,
        model: str,
        request: ItemRequest,
        now: datetime,
        state: ItemState,
    ) -> None:
        conn.execute(
            insert(attempts).values(
                **attempt_values(item_id, number, engine, model, request, now, state)
            )
        )

    def attempts_of(self, item_id: str) -> list[Mapping[str, Any]]:
        with self._single.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.item_id == item_id).order_by(attempts.c.number)
            )
            return [dict(r._mapping) for r in rows]

    # operator actions ----------------------------------------------------------------
