"""Claims: how a step takes an item, keeps it while working, and lets it go.

Each step in :mod:`pipeline.stages` claims the item by compare-and-set, does one stage's
work, and records the next state with :func:`advance`; a step that loses the race returns
without doing anything. Failures go through :func:`pipeline.flow.guard.handle_failure`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Unpack

from pipeline.flow.context import FlowContext
from pipeline.ledger import ItemRow
from pipeline.ledger.repo import AttemptColumns, ItemColumns, Move
from pipeline.log import get_logger
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


def claim(
    ctx: FlowContext, row: ItemRow, old: ItemState, new: ItemState, **values: Unpack[ItemColumns]
) -> ItemRow | None:
    return ctx.ledger.claim(row.id, old, new, owner=ctx.owner, lease_s=ctx.rules.lease_s, **values)


class _Renewals:
    """Claims held by steps running in this process, renewed by one thread every third of
    their lease. A thread per step cost more than the whole of a step that fails at once
    (about 1 ms to start one: a tenth of a 100,000-line run of missing files)."""

    def __init__(self) -> None:
        self._tokens = itertools.count()
        self.reset()

    def reset(self) -> None:
        """Fresh state: at start, and in a forked child (Celery prefork), which inherits no
        threads and must not inherit a lock some parent thread held."""
        self._cond = threading.Condition()
        self._held: dict[int, tuple[FlowContext, ItemRow, float]] = {}  # token: when due
        self._wake_at = math.inf  # when the thread looks next
        self._thread: threading.Thread | None = None

    def hold(self, ctx: FlowContext, row: ItemRow) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            due = time.monotonic() + ctx.rules.lease_s / 3
            self._held[token] = (ctx, row, due)
            if due < self._wake_at:  # waking the thread costs a switch: only when needed
                self._wake_at = due
                self._cond.notify()
            return token

    def drop(self, token: int) -> None:
        with self._cond:
            self._held.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(t, c, r) for t, (c, r, at) in self._held.items() if at <= now]
                for token, ctx, row in due:
                    self._held[token] = (ctx, row, now + ctx.rules.lease_s / 3)
                if not due:
                    self._wake_at = min((at for _, _, at in self._held.values()), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
            for token, ctx, row in due:
                with self._cond:
                    if token not in self._held:  # the step ended meanwhile
                        continue
                renewed = False
                with contextlib.suppress(Exception):  # the ledger is briefly unreachable
                    renewed = ctx.ledger.renew(
                        row.id, row.state, owner=ctx.owner, lease_s=ctx.rules.lease_s
                    )
                if not renewed:
                    self.drop(token)


_RENEWALS = _Renewals()
os.register_at_fork(after_in_child=_RENEWALS.reset)


@contextmanager
def keep_alive(ctx: FlowContext, *rows: ItemRow) -> Iterator[None]:
    """Renew the claims' leases every third of ``lease_s`` while a step runs (an hour-long
    file, a slow upload or submission), so the sweeper never mistakes a busy worker for a
    dead one, and a dead worker's claims lapse within ``lease_s``."""
    tokens = [_RENEWALS.hold(ctx, row) for row in rows]
    try:
        yield
    finally:
        for token in tokens:
            _RENEWALS.drop(token)


def advance(
    ctx: FlowContext,
    row: ItemRow,
    new: ItemState,
    *,
    attempt: AttemptColumns | None = None,
    **values: Unpack[ItemColumns],
) -> bool:
    """Leave a claimed state; False means the claim was lost (lease expired and re-taken)."""
    values.setdefault("next_run_at", None)
    values["tries"] = 0
    ok = ctx.ledger.move(row.id, row.state, new, owner=ctx.owner, attempt=attempt, **values)
    if not ok:
        log.warning("item.claim_lost", item_id=row.key, state=row.state.value)
    return ok


def advance_many(
    ctx: FlowContext, moves: Sequence[tuple[ItemRow, Move]], new: ItemState
) -> set[str]:
    """:func:`advance` for several claimed items in the same state, in one statement: the ids
    of those moved (the others' claims were lost)."""
    if not moves:
        return set()
    state = moves[0][0].state
    assert all(row.state is state for row, _ in moves), "one state per call"
    ready = [
        Move(move.item_id, {"next_run_at": None, **move.values, "tries": 0}, move.attempt)
        for _, move in moves
    ]
    moved = ctx.ledger.move_many(ready, state, new, owner=ctx.owner)
    for row, _ in moves:
        if row.id not in moved:
            log.warning("item.claim_lost", item_id=row.key, state=row.state.value)
    return moved
