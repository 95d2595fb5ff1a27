"""Send the jobs the scheduler hands out as Celery messages. Used after each task and by the
sweeper; what runs next is decided in :mod:`pipeline.flow.policy`, not here.

Before a job is sent its rows get ``next_run_at`` pushed to "now + redispatch_s", so the
sweeper does not send it again while the message waits; if the message is lost, the mark
lapses and the sweeper sends it anew.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from pipeline.flow.actions import Action, redispatch_slack
from pipeline.flow.plan import Job
from pipeline.ledger import ItemRow, utcnow
from pipeline.stages.submit import SubmitOutcome
from workers.app import app
from workers.context import WorkerContext

# A message's arguments: JSON ids only. Task names are ``bulkscribe.<action>`` (workers/tasks.py).
_ARGS: dict[Action, Callable[[Job], tuple[Any, ...]]] = {
    Action.PREPARE: lambda job: (job.ids[0],),
    Action.TRANSCRIBE: lambda job: (job.ids[0],),
    Action.RECONCILE: lambda job: (job.ids[0],),
    Action.SUBMIT: lambda job: (list(job.ids),),
    Action.POLL: lambda job: (job.task_id,),
}


def task_name(action: Action) -> str:
    return f"bulkscribe.{action.value}"


def send(wctx: WorkerContext, job: Job, *, countdown: float = 0.0, marked: bool = False) -> None:
    """Queue ``job``; unless ``marked`` (the step that led here wrote a mark with slack for
    this message), first push its rows' ``next_run_at`` past the message's expected start."""
    if not marked:
        _mark(wctx, job.rows or wctx.ledger.get_many(job.ids), countdown)
    app.send_task(task_name(job.action), args=_ARGS[job.action](job), countdown=countdown)


def send_all(wctx: WorkerContext, jobs: Sequence[Job]) -> None:
    """Queue ``jobs`` now, after marking all of their rows at once (one UPDATE per state,
    not one per job: a sweep after an outage may queue thousands)."""
    _mark(wctx, [r for job in jobs for r in job.rows], 0.0)
    for job in jobs:
        send(wctx, job, marked=True)


def _mark(wctx: WorkerContext, rows: Sequence[ItemRow], countdown: float) -> None:
    """Rows whose step is being queued: not due again until the message should have run
    (polls, the SUBMITTED rows, sooner: see redispatch_slack)."""
    wctx.scheduler.mark_queued(
        rows,
        countdown_s=countdown,
        redispatch_s=wctx.settings.distributed.redispatch_s,
        now=utcnow(),
    )


def hand_off(wctx: WorkerContext, prepared: ItemRow) -> bool:
    """Queue a just-prepared item's submit or transcribe if its mark allows for that
    message (then nothing needs to be read back); False if it is not this worker's to send."""
    action = wctx.scheduler.after_prepare(prepared)
    if not wctx.flow.handed_off(prepared, action, 0.0):
        return False
    send(wctx, Job(action, (prepared.id,), rows=(prepared,)), marked=True)
    return True


def after_submit(wctx: WorkerContext, rows: Sequence[ItemRow], outcome: SubmitOutcome) -> None:
    """After a submit step: queue the first poll of the new task, or whatever is next. Items
    refused at the in-flight cap get no message: :func:`refill` hands them room."""
    first_s = wctx.settings.poll.first_s
    task = outcome.task_id
    if task is not None and wctx.flow.handed_off(rows[0], Action.POLL, first_s):
        poll = Job(Action.POLL, tuple(r.id for r in rows), task_id=task)
        send(wctx, poll, countdown=first_s, marked=True)
    elif task is None and not outcome.waiting_for_room:
        dispatch_after(wctx, [r.id for r in rows])


def refill(wctx: WorkerContext) -> int:
    """A provider task has ended, so one task's room under the in-flight cap is free: queue
    the submission of the items waiting longest for room now, not at the next sweep (a
    fleet at its cap otherwise left the provider a slot short until then). Only while the
    gate is full, so below the cap this costs one Redis read per ended task. Rows are taken
    by compare-and-set on their due time: two workers refilling at once send different
    items. Returns the number of messages sent."""
    if not wctx.gate.full():
        return 0
    settings = wctx.settings
    now = utcnow()
    # Items refused at the cap are due poll.first_s later (the embedded runner's pause).
    before = now + timedelta(seconds=settings.poll.first_s)
    waiting = wctx.ledger.waiting_for_room(before, limit=settings.provider.batch_size)
    until = now + timedelta(
        seconds=redispatch_slack(Action.SUBMIT, settings.distributed.redispatch_s)
    )
    sent = 0
    for job in wctx.scheduler.refill(waiting, before, room=1):
        taken = set(wctx.ledger.take_due(job.rows, before=before, until=until))
        rows = tuple(r for r in job.rows if r.id in taken)
        if rows:
            send(wctx, Job(job.action, tuple(r.id for r in rows), rows=rows), marked=True)
            sent += 1
    return sent


def poll_again(
    wctx: WorkerContext, task_id: str, rows: Sequence[ItemRow], countdown: float
) -> None:
    """Queue a task's next poll; the poll that found it running marked its rows for it."""
    send(
        wctx,
        Job(Action.POLL, tuple(r.id for r in rows), task_id=task_id),
        countdown=countdown,
        marked=True,
    )


def dispatch_after(wctx: WorkerContext, item_ids: Sequence[str]) -> int:
    """After a step: queue the next one for these items if it is due within the horizon."""
    return dispatch_rows(wctx, wctx.ledger.get_many(item_ids))


def dispatch_rows(wctx: WorkerContext, fresh: Sequence[ItemRow]) -> int:
    """:func:`dispatch_after` for rows just read from the ledger."""
    follow_ups = wctx.scheduler.follow_ups(fresh, utcnow())
    for job, countdown in follow_ups:
        send(wctx, job, countdown=countdown)
    return len(follow_ups)
