"""The beat sweeper: the ledger, not the broker, decides what runs.

Every ``sweep_s`` (under a Redis lock, so only one sweep runs at a time): claims whose lease
expired go back to where they came from, due work is queued (polls, retries, anything whose
message was lost), and batches that are finished get their results.jsonl.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pipeline.ledger import utcnow
from pipeline.ledger.budgets import count_parked
from pipeline.log import get_logger
from pipeline.results import write_batch_results
from pipeline.states import ItemState
from workers.dispatch import batch_size, mode_of, send_all
from workers.metrics import observe_sweep

log = get_logger("bulkscribe.sweep")


def run_sweep(wctx: Any) -> dict[str, int]:
    dist = wctx.settings.distributed
    lock = wctx.redis.lock("bulkscribe:sweep", timeout=max(60, int(dist.sweep_s * 4)),
                           blocking=False)
    if not lock.acquire(blocking=False):
        return {"skipped": 1}
    try:
        return _sweep(wctx)
    finally:
        # The lock may have expired under a very slow sweep: the next one takes over.
        with contextlib.suppress(Exception):
            lock.release()


def _sweep(wctx: Any) -> dict[str, int]:
    from pipeline.flow.plan import plan_jobs

    ledger = wctx.ledger
    dist = wctx.settings.distributed
    released = ledger.release_expired()
    for item_id, state in released:
        log.warning("lease.expired", item_id=item_id, was=state.value)
    now = utcnow()
    rows = ledger.due_rows(now)
    jobs = plan_jobs(
        rows, lambda r: mode_of(wctx, r), now,
        # Items parked for budget admission wait for an earlier one, which needs room.
        prepare_room=dist.max_prepared - ledger.count_states(ItemState.PREPARING,
                                                             ItemState.PREPARED)
        + count_parked(ledger),
        submit_room=wctx.settings.provider.max_inflight_tasks - ledger.inflight_tasks(),
        batch_size=lambda m: batch_size(wctx, m), default_model=wctx.settings.model)
    send_all(wctx, jobs)
    closed = 0
    for batch_id in ledger.open_batches():
        counts = ledger.counts(batch_id)
        if counts and all(ItemState(s).terminal for s in counts):
            write_batch_results(ledger, batch_id, wctx.flow.sinks(batch_id))
            ledger.mark_batch_done(batch_id)
            closed += 1
            log.info("batch.done", batch_id=batch_id, counts=counts)
    observe_sweep(wctx, released=len(released), queued=len(jobs))
    return {"released": len(released), "queued": len(jobs), "closed": closed}
