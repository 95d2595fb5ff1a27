"""The beat sweeper: the ledger, not the broker, decides what runs.

Every ``sweep_s`` (under a Redis lock, so only one sweep runs at a time): claims whose lease
expired go back to where they came from, due work is queued (polls, retries, anything whose
message was lost), and batches that are finished get their results.jsonl (and, in the same
transaction as being marked done, their batch.completed webhook). Newly DEAD items are
announced once per batch and sweep, and due webhooks are handed to ``bulkscribe.notify``.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from pipeline.ledger import utcnow
from pipeline.ledger.counts import fold_all
from pipeline.log import get_logger
from pipeline.notify.outbox import count_due, note_dead
from pipeline.outputs.results import close_batch
from pipeline.planning.pricing import PriceTable
from workers.context import WorkerContext, queue_notify
from workers.dispatch import send_all
from workers.metrics import observe_sweep

log = get_logger("bulkscribe.sweep")


def run_sweep(wctx: WorkerContext) -> dict[str, int]:
    dist = wctx.settings.distributed
    lock = wctx.redis.lock(
        "bulkscribe:sweep", timeout=max(60, int(dist.sweep_s * 4)), blocking=False
    )
    if not lock.acquire(blocking=False):
        return {"skipped": 1}
    try:
        return _sweep(wctx)
    finally:
        # The lock may have expired under a very slow sweep: the next one takes over.
        with contextlib.suppress(Exception):
            lock.release()


def _sweep(wctx: WorkerContext) -> dict[str, int]:
    ledger = wctx.ledger
    dist = wctx.settings.distributed
    released = ledger.release_expired()
    for item_id, state in released:
        log.warning("lease.expired", item_id=item_id, was=state.value)
    lost = broker_lost(wctx.redis)
    if lost:
        log.warning(
            "broker.lost",
            detail="the broker's data is gone (restarted without "
            "persistence, or flushed): queueing every waiting item again now",
        )
    now = utcnow()
    # After a loss the marks of queued steps would make them wait for messages that no
    # longer exist (up to distributed.redispatch_s): everything waiting is due at once.
    rows = ledger.due_rows(now, ignore_marks=lost)
    if lost:
        rows = [replace(r, next_run_at=None) for r in rows]
    jobs = wctx.scheduler.sweep(
        rows,
        now,
        max_prepared=dist.max_prepared,
        max_inflight=wctx.settings.provider.max_inflight_tasks,
    )
    send_all(wctx, jobs)
    if lost:  # only now: a sweep that fails before this point leaves the loss to the next
        wctx.redis.set(BROKER_MARK, "1")
    closed = 0
    notify = wctx.settings.notify
    for batch_id in ledger.open_batches():
        # Normally the worker that finished the batch's last item has written its results;
        # this covers a worker that died (or failed to write) just after that item.
        if close_batch(
            ledger,
            batch_id,
            wctx.flow.sinks(batch_id),
            owner=wctx.flow.owner,
            notify=notify,
            prices=PriceTable.of(wctx.settings),
        ):
            closed += 1
            log.info("batch.done", batch_id=batch_id, by="sweeper")
    # Workers write batch.items_dead with the DEAD move (Ledger.on_dead); this announces any
    # DEAD item a process without that hook left unannounced.
    dead = note_dead(ledger.engine, notify)
    fold_all(ledger.engine)  # item_counts' deltas (PostgreSQL): a few rows per batch again
    due = count_due(ledger.engine)
    if due:
        send_notify(wctx)
    observe_sweep(wctx, released=len(released), queued=len(jobs))
    return {
        "released": len(released),
        "queued": len(jobs),
        "closed": closed,
        "broker_lost": int(lost),
        "dead_noted": dead,
        "notify_due": due,
    }


def send_notify(wctx: WorkerContext) -> None:
    """Due webhooks are sent by a task on the provider queue, not in the sweep (a slow
    endpoint must not hold the sweep's lock)."""
    queue_notify()


BROKER_MARK = "bulkscribe:broker-mark"


def broker_lost(r: Any) -> bool:
    """Whether the broker lost its data since the last sweep, and with it every queued
    message: the mark sweeps leave in Redis is gone. That covers a Redis restarted without
    persistence (its run_id changes too) and a FLUSHALL (its run_id does not). The first
    sweep on a new broker also answers yes, which only queues waiting work early."""
    return not r.exists(BROKER_MARK)
