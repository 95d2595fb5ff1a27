"""Budget admission as the steps see it: park a prepared item, then let the ledger decide.

An item of a batch with caps is PREPARED *parked* (never due by itself); right after, the
batch's admission is advanced (``pipeline/ledger/budgets.py``), which releases the items
that fit, in manifest order, and SKIPs the rest. Parked items are found by both drivers
the same way as any other: by their ``next_run_at`` in the ledger.
"""

from __future__ import annotations

from datetime import datetime

from pipeline.flow.context import FlowContext
from pipeline.ledger import ItemRow
from pipeline.ledger.budgets import PARKED, advance, get_budget
from pipeline.log import get_logger
from pipeline.planning.budget import Admission

log = get_logger("bulkscribe.budget")


def parked_until(ctx: FlowContext, row: ItemRow) -> datetime | None:
    """PARKED when the item's batch has caps and its line is not decided yet (it waits for
    admission), else None. An item behind the decided line was admitted before (a retry or
    reprocess of it): it goes on without being counted again."""
    budget = get_budget(ctx.ledger, row.batch_id)
    return PARKED if budget is not None and row.line_no > budget.tally.line else None


def admit_batch(ctx: FlowContext, batch_id: str) -> Admission | None:
    """Advance the batch's admission; skipped items' audio is let go of."""
    decision = advance(ctx.ledger, batch_id)
    if decision is None:
        return None
    if decision.admit or decision.skip:
        log.info(
            "budget.advanced",
            batch_id=batch_id,
            admitted=len(decision.admit),
            skipped=len(decision.skip),
            used_s=round(decision.tally.used_s, 3),
        )
    for entry in decision.skip:
        if entry.media_key:
            with ctx.ledger.media_guard(entry.media_key) as in_use:
                if not in_use():
                    ctx.media.forget(entry.media_key)
    return decision
