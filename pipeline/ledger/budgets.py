"""Budgets in the ledger: a batch's caps and running totals, advanced by compare-and-set.

The decision is :func:`pipeline.planning.budget.admit` (pure); this module reads what it needs, and
writes the new totals and the items' moves in one transaction guarded by the budget row's
``rev``. Two workers advancing the same batch at once: one wins, the other reads again
and finds less (or nothing) to do, so no item is admitted twice and totals never drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, delete, func, insert, select, update

from pipeline.errors import FailureCode
from pipeline.ledger.repo import Ledger, utcnow
from pipeline.ledger.tables import attempts, batches, budgets, items
from pipeline.ledger.transitions import check_move
from pipeline.ledger.values import PROBLEM_PREFIX, ItemRequest
from pipeline.planning.budget import SKIPPABLE, Admission, Caps, Entry, Tally, admit, skip_message
from pipeline.states import ItemState

# next_run_at of a PREPARED item waiting for admission: never due by itself. Admission
# sets it to now; nothing else looks so far ahead.
PARKED = datetime(9999, 1, 1, tzinfo=UTC)
PAGE = 500  # items read per step of the walk


def is_parked(when: datetime | None) -> bool:
    return when is not None and when.year >= PARKED.year


@dataclass(frozen=True, slots=True)
class Budget:
    caps: Caps
    tally: Tally
    rev: int
    currency: str | None = None


def get_budget(ledger: Ledger, batch_id: str) -> Budget | None:
    with ledger.engine.connect() as conn:
        row = conn.execute(select(budgets).where(budgets.c.batch_id == batch_id)).first()
    if row is None:
        return None
    m = row._mapping
    return Budget(
        Caps(m["max_audio_s"], m["max_cost"], dict(m["prices"] or {})),
        Tally(m["line"], m["used_s"], m["used_cost"], m["skip_from"]),
        m["rev"],
        m["currency"],
    )


def set_caps(
    ledger: Ledger, batch_id: str, caps: Caps, *, currency: str | None = None
) -> list[str]:
    """Give a batch these caps (None everywhere removes them). Caps that admit more than
    before reopen the batch: its SKIPPED items start a new attempt, and admission carries
    on from the running totals. Returns the ids of the items that start again."""
    old = get_budget(ledger, batch_id)
    reopen = old is not None and (not caps.active or not old.caps.covers(caps))
    with ledger.engine.begin() as conn:
        if not caps.active:
            conn.execute(delete(budgets).where(budgets.c.batch_id == batch_id))
        elif old is None:
            conn.execute(
                insert(budgets).values(
                    batch_id=batch_id,
                    max_audio_s=caps.max_audio_s,
                    max_cost=caps.max_cost,
                    prices=dict(caps.prices),
                    currency=currency,
                    rev=0,
                    line=0,
                    used_s=0.0,
                    used_cost=0.0,
                    skip_from=None,
                )
            )
        else:
            values = dict(
                max_audio_s=caps.max_audio_s,
                max_cost=caps.max_cost,
                prices=dict(caps.prices),
                currency=currency,
                rev=old.rev + 1,
            )
            if reopen:
                values["skip_from"] = None
            conn.execute(update(budgets).where(budgets.c.batch_id == batch_id).values(values))
    if old is None or not reopen:
        return []
    readmitted = [
        row.id
        for row in ledger.list_items(batch_id, states=[ItemState.SKIPPED])
        if ledger.restart(row.id, expected=ItemState.SKIPPED)
    ]
    if not caps.active:  # no cap any more: whatever waits for admission goes now
        parked = [
            r
            for r in ledger.list_items(batch_id, states=[ItemState.PREPARED])
            if is_parked(r.next_run_at)
        ]
        ledger.mark_due(parked, utcnow())
    return readmitted


def advance(ledger: Ledger, batch_id: str, *, tries: int = 20) -> Admission | None:
    """Decide what can be decided now; None when the batch has no budget. The items it
    admits are due at once; the ones it skips are SKIPPED with ``budget_exceeded``."""
    for _ in range(tries):
        budget = get_budget(ledger, batch_id)
        if budget is None:
            return None
        decision = admit(budget.tally, _entries(ledger, batch_id, budget.tally), budget.caps)
        if not decision.changed and decision.tally == budget.tally:
            return decision
        if _apply(ledger, batch_id, budget, decision):
            return decision
    raise RuntimeError(f"budget of batch {batch_id} kept changing under {tries} tries")


def _entries(ledger: Ledger, batch_id: str, tally: Tally) -> list[Entry]:
    """The items the walk looks at, read a page at a time until it must stop."""
    out: list[Entry] = []
    after = tally.line
    cond = [items.c.batch_id == batch_id, ~items.c.key.startswith(PROBLEM_PREFIX)]
    if tally.skip_from is not None:
        cond.append(items.c.state.in_([s.value for s in SKIPPABLE]))
    with ledger.engine.connect() as conn:
        # An item's spec names its model; the batch's is the fallback for older items.
        default_model = str(
            conn.execute(select(batches.c.model).where(batches.c.id == batch_id)).scalar() or ""
        )
        while True:
            rows = conn.execute(
                select(
                    items.c.id,
                    items.c.line_no,
                    items.c.state,
                    items.c.audio_duration_ms,
                    items.c.spec,
                    items.c.media_key,
                )
                .where(and_(*cond, items.c.line_no > after))
                .order_by(items.c.line_no)
                .limit(PAGE)
            ).all()
            for r in rows:
                ms = r.audio_duration_ms
                state = ItemState(r.state)
                known = ms is not None and state not in (ItemState.PENDING, ItemState.PREPARING)
                out.append(
                    Entry(
                        r.id,
                        r.line_no,
                        state,
                        ms / 1000 if known else None,
                        ItemRequest.decode(r.spec).model_or(default_model),
                        r.media_key,
                    )
                )
            if len(rows) < PAGE:
                return out
            if tally.skip_from is None and any(
                e.seconds is None and e.state not in (ItemState.FAILED, ItemState.DEAD)
                for e in out[-len(rows) :]
            ):
                return out  # the walk stops within this page
            after = rows[-1].line_no


def _apply(ledger: Ledger, batch_id: str, budget: Budget, decision: Admission) -> bool:
    now = utcnow()
    t = decision.tally
    with ledger.engine.begin() as conn:
        won = (
            conn.execute(
                update(budgets)
                .where(and_(budgets.c.batch_id == batch_id, budgets.c.rev == budget.rev))
                .values(
                    rev=budget.rev + 1,
                    line=t.line,
                    used_s=t.used_s,
                    used_cost=t.used_cost,
                    skip_from=t.skip_from,
                )
            ).rowcount
            == 1
        )
        if not won:
            return False
        if decision.admit:
            conn.execute(
                update(items)
                .where(
                    and_(
                        items.c.id.in_(list(decision.admit)),
                        items.c.state == ItemState.PREPARED.value,
                    )
                )
                .values(next_run_at=now, updated_at=now)
            )
        message = skip_message(budget.caps, t, budget.currency)
        for e in decision.skip:
            # Part of admission's transaction, so not through Ledger.move: checked here.
            check_move(e.state, ItemState.SKIPPED)
            moved = conn.execute(
                update(items)
                .where(and_(items.c.id == e.id, items.c.state == e.state.value))
                .values(
                    state=ItemState.SKIPPED.value,
                    error_code=FailureCode.BUDGET_EXCEEDED.value,
                    error_message=message,
                    error_retryable=False,  # a higher cap admits it, not another try
                    next_run_at=None,
                    lease_owner=None,
                    lease_until=None,
                    finished_at=now,
                    updated_at=now,
                )
                .returning(items.c.attempt)
            ).first()
            if moved is not None:
                conn.execute(
                    update(attempts)
                    .where(and_(attempts.c.item_id == e.id, attempts.c.number == moved.attempt))
                    .values(
                        state=ItemState.SKIPPED.value,
                        finished_at=now,
                        error_code=FailureCode.BUDGET_EXCEEDED.value,
                        error_message=message,
                        error_retryable=False,
                    )
                )
    return True


def count_parked(ledger: Ledger) -> int:
    """PREPARED items of every batch waiting for admission (for backpressure: they hold
    audio, but the item they wait for must still find room to be prepared)."""
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    and_(
                        items.c.state == ItemState.PREPARED.value,
                        items.c.next_run_at >= PARKED,
                    )
                )
            ).scalar()
            or 0
        )
