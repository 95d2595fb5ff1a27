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

from pipeline.flow.actions import Action
from pipeline.flow.plan import Job
from pipeline.stages.poll import poll_tasks
from pipeline.stages.prepare import prepare_step
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.stages.submit import submit_groups
from pipeline.stages.transcribe import transcribe_step
from pipeline.states import ItemState
from workers.app import app
from workers.context import worker_context
from workers.dispatch import (
    after_submit,
    dispatch_after,
    dispatch_rows,
    hand_off,
    refill,
    send_later,
)
from workers.schedules import start_scheduled_run
from workers.steplog import outcomes as outcomes_of
from workers.steplog import step_log
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
def submit(self: LedgerTask, item_ids: list[str] | list[list[str]]) -> None:
    """Submit prepared items as one provider task (several only for Fun-ASR); a packed
    message (a list of such lists) submits each group as its own task. Should the step
    stop half-way, what it submitted is recorded and the sweeper sends its first polls."""
    ctx = worker_context()
    groups = _groups(item_ids)
    fresh = {r.id: r for r in ctx.ledger.get_many(i for group in groups for i in group)}
    prepared = {i for i, r in fresh.items() if r.state is ItemState.PREPARED}
    mine = [[fresh[i] for i in group if i in prepared] for group in groups]
    mine = [rows for rows in mine if rows]
    if not mine:
        return
    every = [r for rows in mine for r in rows]
    polls: list[tuple[Job, float]] = []
    with (
        bound_contextvars(batch_id=every[0].batch_id, task_id=self.request.id),
        step_log("submit", every, ctx.ledger.get_many) as known,
    ):
        for rows, outcome in zip(mine, submit_groups(ctx.flow, mine), strict=True):
            if outcome.task_id is not None:  # the rows just read were all this step's
                known.update({r.id: "submitted" for r in rows})
            poll = after_submit(ctx, rows, outcome)
            if poll is not None:
                polls.append(poll)
        send_later(ctx, polls, marked=True)  # the new tasks' first polls, packed


def _groups(item_ids: list[str] | list[list[str]]) -> list[list[str]]:
    # A submit message carries one group of ids, or (packed) a list of groups.
    if item_ids and isinstance(item_ids[0], list):
        return [list(group) for group in item_ids]
    return [[str(i) for i in item_ids]]


@app.task(**_opts(name="bulkscribe.poll"))
def poll(self: LedgerTask, provider_task_id: str | list[str]) -> None:
    """Query provider tasks once each (one, or a packed list); never waits in the worker."""
    ctx = worker_context()
    task_ids = [provider_task_id] if isinstance(provider_task_id, str) else provider_task_id
    tasks = {
        t: [r for r in rows if r.state is ItemState.SUBMITTED]
        for t, rows in ctx.ledger.by_tasks(task_ids).items()
    }
    rows = [r for mine in tasks.values() for r in mine]
    with (
        bound_contextvars(provider_task_id=",".join(tasks), task_id=self.request.id),
        step_log("poll", rows, ctx.ledger.get_many) as known,
    ):
        outcomes = poll_tasks(ctx.flow, tasks)
        again: list[tuple[Job, float]] = []
        read_back: list[str] = []
        for task_id, outcome in outcomes.items():
            mine = tasks[task_id]
            known.update({r.id: "waiting" for r in mine if outcome.waiting})
            known.update({i: "succeeded" for i in outcome.succeeded})
            if outcome.again_in_s is not None:
                job = Job(Action.POLL, tuple(r.id for r in mine), task_id=task_id)
                again.append((job, outcome.again_in_s))
            elif outcome.read_back:
                read_back.append(task_id)
        send_later(ctx, again, marked=True)  # the polls that found them running marked them
        if read_back:
            fresh = [r for task in ctx.ledger.by_tasks(read_back).values() for r in task]
            known.update(outcomes_of([r for t in read_back for r in tasks[t]], fresh))
            dispatch_rows(ctx, fresh)
        ended = sum(1 for t, o in outcomes.items() if tasks[t] and not o.waiting)
        if ended:  # those tasks' room is free
            refill(ctx, room=ended)


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
