"""Celery tasks: thin wiring around ``pipeline.flow``. Messages carry ids only.

Each task loads by id, returns at once if the ledger says the work is done or taken, runs one
step, and queues what the ledger says comes next. Nothing here decides business logic, and
a lost or duplicated message is harmless: the sweeper re-queues from the ledger, and the
compare-and-set claims make a second delivery a no-op.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from structlog.contextvars import bound_contextvars

from pipeline.stages.poll import poll_step
from pipeline.stages.prepare import prepare_step
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.stages.submit import submit_step
from pipeline.stages.transcribe import transcribe_step
from pipeline.states import ItemState
from workers.app import app
from workers.context import worker_context
from workers.dispatch import (
    after_submit,
    dispatch_after,
    dispatch_rows,
    hand_off,
    poll_again,
    refill,
)
from workers.schedules import start_scheduled_run
from workers.steplog import outcomes, step_log
from workers.sweeper import run_sweep


class LedgerTask(Task):  # type: ignore[misc]
    """Infrastructure hiccups (database, Redis) retry the message with backoff; item-level
    failures are recorded in the ledger by the steps themselves."""

    autoretry_for = (OperationalError, RedisError)
    retry_backoff = True
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 20
    acks_late = True
    reject_on_worker_lost = True


def _opts(**kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name"), "bind": True, "base": LedgerTask, **kw}


@app.task(**_opts(name="bulkscribe.prepare"))
def prepare(self: LedgerTask, item_id: str) -> None:
    """Probe and normalize one item; safe to run twice."""
    ctx = worker_context()
    row = ctx.ledger.get(item_id)
    if row is None or row.state is not ItemState.PENDING:
        return
    with (
        bound_contextvars(batch_id=row.batch_id, item_id=row.key, task_id=self.request.id),
        step_log("prepare", [row], ctx.ledger.get_many) as known,
    ):
        prepared = prepare_step(ctx.flow, row)
        if prepared is not None:
            known[row.id] = "prepared"
        if prepared is None or not hand_off(ctx, prepared):
            dispatch_after(ctx, [item_id])  # failed or retrying, or a Fun-ASR file


@app.task(**_opts(name="bulkscribe.transcribe"))
def transcribe(self: LedgerTask, item_id: str) -> None:
    """Transcribe one prepared item in place (local engine or a sync model)."""
    ctx = worker_context()
    row = ctx.ledger.get(item_id)
    if row is None or row.state is not ItemState.PREPARED:
        return
    with (
        bound_contextvars(batch_id=row.batch_id, item_id=row.key, task_id=self.request.id),
        step_log("transcribe", [row], ctx.ledger.get_many) as known,
    ):
        if transcribe_step(ctx.flow, row):  # succeeded: nothing comes next
            known[row.id] = "succeeded"
        else:
            dispatch_after(ctx, [item_id])


@app.task(**_opts(name="bulkscribe.submit"))
def submit(self: LedgerTask, item_ids: list[str]) -> None:
    """Submit prepared items as one provider task (several only for Fun-ASR)."""
    ctx = worker_context()
    rows = [r for r in ctx.ledger.get_many(item_ids) if r.state is ItemState.PREPARED]
    if not rows:
        return
    with (
        bound_contextvars(batch_id=rows[0].batch_id, task_id=self.request.id),
        step_log("submit", rows, ctx.ledger.get_many) as known,
    ):
        outcome = submit_step(ctx.flow, rows)
        if outcome.task_id is not None:  # the rows just read were all this step's to submit
            known.update({r.id: "submitted" for r in rows})
        after_submit(ctx, rows, outcome)


@app.task(**_opts(name="bulkscribe.poll"))
def poll(self: LedgerTask, provider_task_id: str) -> None:
    """Query one provider task once; never waits in the worker."""
    ctx = worker_context()
    rows = [r for r in ctx.ledger.by_task(provider_task_id) if r.state is ItemState.SUBMITTED]
    with (
        bound_contextvars(provider_task_id=provider_task_id, task_id=self.request.id),
        step_log("poll", rows, ctx.ledger.get_many) as known,
    ):
        outcome = poll_step(ctx.flow, provider_task_id, rows)
        known.update({r.id: "waiting" for r in rows if outcome.waiting})
        known.update({i: "succeeded" for i in outcome.succeeded})
        if outcome.again_in_s is not None:
            poll_again(ctx, provider_task_id, rows, outcome.again_in_s)
        elif outcome.read_back:
            fresh = ctx.ledger.by_task(provider_task_id)
            known.update(outcomes(rows, fresh))
            dispatch_rows(ctx, fresh)
        if rows and not outcome.waiting:  # the task has ended: its room is free
            refill(ctx)


@app.task(**_opts(name="bulkscribe.reconcile"))
def reconcile(self: LedgerTask, item_id: str) -> None:
    """Find out whether a submission cut short by a crash reached the provider."""
    ctx = worker_context()
    row = ctx.ledger.get(item_id)
    if row is None or row.state is not ItemState.SUBMITTING:
        return
    with (
        bound_contextvars(batch_id=row.batch_id, item_id=row.key, task_id=self.request.id),
        step_log("reconcile", [row], ctx.ledger.get_many),
    ):
        reconcile_submitting(ctx.flow, row)
        dispatch_after(ctx, [item_id])


@app.task(**_opts(name="bulkscribe.sweep"))
def sweep(self: LedgerTask) -> dict[str, int]:
    """Beat's heartbeat: release dead claims, queue due work, close finished batches."""
    return run_sweep(worker_context())


@app.task(**_opts(name="bulkscribe.scheduled_run"))
def scheduled_run(self: LedgerTask, name: str) -> str | None:
    """A configured recurring run: new files under a prefix become a batch."""
    return start_scheduled_run(worker_context(), name)


@app.task(**_opts(name="bulkscribe.notify"))
def notify(self: LedgerTask) -> dict[str, int]:
    """Send due webhooks from the outbox (claims make a second copy of this task harmless)."""
    from pipeline.notify.delivery import deliverer

    ctx = worker_context()
    sender = deliverer(ctx.settings, ctx.ledger.engine)
    try:  # bounded, so a flood of due messages never holds a provider worker for long
        return sender.drain(ctx.settings.distributed.sweep_s).states
    finally:
        sender.close()
