"""Reads across batches (due work, provider tasks, shared audio) and operator actions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, text

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.rows import ItemRow, _aware, utcnow
from pipeline.ledger.statements import IN_USE, INFLIGHT, KEYS_IN_USE
from pipeline.ledger.tables import actions, attempts, items
from pipeline.states import ItemState


class QueryStore(LedgerBase):
    def due_rows(
        self, now: datetime, *, limit: int = 2000, ignore_marks: bool = False
    ) -> list[ItemRow]:
        """Rows some step could act on now, across batches, oldest work first. With
        ``ignore_marks``, every waiting row, however far off its ``next_run_at`` (the
        broker lost the messages those marks wait for)."""
        waiting = [ItemState.PENDING.value, ItemState.PREPARED.value, ItemState.SUBMITTED.value]
        due = (
            items.c.state.in_(waiting)
            if ignore_marks
            else and_(
                items.c.state.in_(waiting),
                or_(items.c.next_run_at.is_(None), items.c.next_run_at <= now),
            )
        )
        query = (
            select(items)
            .where(
                or_(
                    due,
                    and_(
                        items.c.state == ItemState.SUBMITTING.value,
                        or_(items.c.lease_until.is_(None), items.c.lease_until <= now),
                    ),
                )
            )
            .order_by(items.c.next_run_at.nulls_first(), items.c.created_at)
            .limit(limit)
        )
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query)]

    def timings(self, batch_id: str, *, limit: int | None = None) -> list[Mapping[str, float]]:
        """Per-stage seconds of each item's current attempt (for status reports); with
        ``limit``, of the first ``limit`` items in manifest order (a bounded sample)."""
        # ix_items_batch_timed (partial): a batch not started yet is not read at all.
        query = (
            select(items.c.timings)
            .where(and_(items.c.batch_id == batch_id, items.c.timings.is_not(None)))
            .order_by(items.c.line_no)
            .limit(limit)
        )
        with self._single.connect() as conn:
            return [dict(t or {}) for t in conn.execute(query).scalars()]

    def known_task_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these provider task ids any item or attempt has recorded."""
        if not task_ids:
            return set()
        with self._single.connect() as conn:
            a = conn.execute(
                select(items.c.provider_task_id).where(items.c.provider_task_id.in_(list(task_ids)))
            ).scalars()
            b = conn.execute(
                select(attempts.c.provider_task_id).where(
                    attempts.c.provider_task_id.in_(list(task_ids))
                )
            ).scalars()
            return {t for t in (*a, *b) if t}

    def waiting_for_room(self, before: datetime, *, limit: int) -> list[ItemRow]:
        """PREPARED items due by ``before`` with no message queued for them, longest
        waiting first: those a submit at the in-flight cap sent back (due ``poll.first_s``
        later) or the sweeper left for lack of room. Read through ``ix_items_state_next``.
        """
        query = (
            select(items)
            .where(
                and_(
                    items.c.state == ItemState.PREPARED.value,
                    or_(items.c.next_run_at.is_(None), items.c.next_run_at <= before),
                )
            )
            .order_by(items.c.next_run_at.nulls_first(), items.c.created_at)
            .limit(limit)
        )
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query)]

    def inflight_tasks(self) -> int:
        """Provider tasks submitted and not yet finished with, across every batch."""
        with self._single.connect() as conn:
            return int(conn.execute(INFLIGHT).scalar() or 0)

    def count_states(self, *states: ItemState) -> int:
        with self._single.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(items.c.state.in_([s.value for s in states]))
                ).scalar()
                or 0
            )

    @contextmanager
    def media_guard(self, key: str) -> Iterator[Callable[[], bool]]:
        """:meth:`media_guard_many` of one key; yields whether an unfinished item still
        needs it."""
        with self.media_guard_many([key]) as in_use:
            yield lambda: key in in_use()

    @contextmanager
    def media_guard_many(self, keys: Iterable[str]) -> Iterator[Callable[[], set[str]]]:
        """Held while the shared audio under ``keys`` is stored, or checked and deleted;
        yields a function giving the keys an unfinished item still needs.

        Identical audio is stored once (content-addressed) and deleted by whichever item
        finishes last. Unguarded, an item could find the object present and skip its upload
        just before another item, seeing no user of it yet, deleted it; the first item then
        submitted a URL answering 404 (found by tests/distributed: about one 50-file run with
        copies in three). PostgreSQL: transaction-scoped advisory locks, across processes
        and hosts; SQLite (embedded, one process): thread locks. Either is taken in one
        order, so two holders of several keys never wait on each other.
        """
        wanted = sorted(set(keys))
        if self.engine.dialect.name != "postgresql":
            slots = sorted({hash(k) % len(self._media_locks) for k in wanted})
            with ExitStack() as stack:  # each lock once (two keys may share one), in order
                for slot in slots:
                    stack.enter_context(self._media_locks[slot])
                yield lambda: {k for k in wanted if self.media_in_use(k)}
            return
        locks = [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big", signed=True)
            for k in wanted
        ]
        with self.engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(id) FROM unnest(CAST(:ids AS bigint[])) AS id"),
                {"ids": sorted(set(locks))},
            )
            yield lambda: set(conn.execute(KEYS_IN_USE, {"w_keys": wanted}).scalars())

    def media_in_use(self, key: str) -> bool:
        """Whether an item not yet finished still needs the stored audio under ``key``."""
        with self._single.connect() as conn:
            return bool(conn.execute(IN_USE, {"w_key": key}).scalar())

    def record_action(
        self, actor: str, action: str, batch_id: str, item_ids: Sequence[str] = (), **detail: Any
    ) -> None:
        """One row for the batch and one per item changed: who did what, and when."""
        now = utcnow()
        rows = [
            {
                "at": now,
                "actor": actor[:200],
                "action": action,
                "batch_id": batch_id,
                "item_id": None,
                "detail": {**detail, "items": len(item_ids)},
            }
        ]
        rows += [
            {
                "at": now,
                "actor": actor[:200],
                "action": action,
                "batch_id": batch_id,
                "item_id": i,
                "detail": detail,
            }
            for i in item_ids
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(actions), rows)

    def actions_of(
        self, *, item_id: str | None = None, batch_id: str | None = None, limit: int = 200
    ) -> list[Mapping[str, Any]]:
        """An item's actions, or a batch's batch-level ones; newest first."""
        query = select(actions).order_by(actions.c.at.desc(), actions.c.id.desc()).limit(limit)
        if item_id is not None:
            query = query.where(actions.c.item_id == item_id)
        else:
            query = query.where(and_(actions.c.batch_id == batch_id, actions.c.item_id.is_(None)))
        with self._single.connect() as conn:
            return [{**r._mapping, "at": _aware(r.at)} for r in conn.execute(query)]
