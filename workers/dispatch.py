"""Queue the steps the ledger says are due. Used after each task and by the sweeper.

Before a step is queued its rows get ``next_run_at`` pushed to "now + redispatch_s", so the
sweeper does not queue it again while the message waits; if the message is lost, the mark
lapses and the sweeper queues it anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pipeline.asr.catalog import Mode
from pipeline.asr.dashscope.params import is_funasr
from pipeline.errors import PipelineError
from pipeline.flow.actions import Action, after_prepare, redispatch_slack
from pipeline.flow.plan import Job, plan_jobs
from pipeline.ledger import Failure, ItemRow, utcnow
from pipeline.log import get_logger
from pipeline.states import ItemState

log = get_logger("bulkscribe.dispatch")

COUNTDOWN_MAX_S = 60.0  # longer waits belong to the sweeper, not to ETA messages


def mode_of(wctx: Any, row: ItemRow) -> Mode:
    try:
        return wctx.flow.info(row).mode
    except PipelineError as exc:  # an item naming a model that does not exist
        wctx.ledger.fail(row.id, row.state, Failure.of(exc))
        return Mode.CLIP


def batch_size(wctx: Any, model: str) -> int:
    return wctx.settings.provider.batch_size if is_funasr(model) else 1


def send(wctx: Any, job: Job, *, countdown: float = 0.0, marked: bool = False) -> None:
    """Queue ``job``; unless ``marked`` (the step that led here wrote a mark with slack for
    this message), first push its rows' ``next_run_at`` past the message's expected start."""
    from workers import tasks

    if not marked:
        _mark(wctx, job.rows or wctx.ledger.get_many(job.ids), countdown)
    if job.action is None:
        tasks.reconcile.apply_async((job.ids[0],), countdown=countdown)
    elif job.action is Action.POLL:
        tasks.poll.apply_async((job.task_id,), countdown=countdown)
    elif job.action is Action.SUBMIT:
        tasks.submit.apply_async((list(job.ids),), countdown=countdown)
    elif job.action is Action.TRANSCRIBE:
        tasks.transcribe.apply_async((job.ids[0],), countdown=countdown)
    else:
        tasks.prepare.apply_async((job.ids[0],), countdown=countdown)


def send_all(wctx: Any, jobs: Sequence[Job]) -> None:
    """Queue ``jobs`` now, after marking all of their rows at once (one UPDATE per state,
    not one per job: a sweep after an outage may queue thousands)."""
    _mark(wctx, [r for job in jobs for r in job.rows], 0.0)
    for job in jobs:
        send(wctx, job, marked=True)


def _mark(wctx: Any, rows: Sequence[ItemRow], countdown: float) -> None:
    """Rows whose step is being queued: not due again until the message should have run
    (polls, the SUBMITTED rows, sooner: see redispatch_slack)."""
    redispatch_s = wctx.settings.distributed.redispatch_s
    now = utcnow()
    polls = [r for r in rows if r.state is ItemState.SUBMITTED]
    others = [r for r in rows if r.state is not ItemState.SUBMITTED]
    for part, action in ((polls, Action.POLL), (others, None)):
        if part:
            wctx.ledger.mark_due(
                part, now + timedelta(seconds=countdown + redispatch_slack(action, redispatch_s))
            )


def left_to_sweeper(settings: Any, row: ItemRow) -> bool:
    """A prepared Fun-ASR file is submitted by the sweeper, which gathers up to
    ``provider.batch_size`` of them into one task; nothing else waits for it."""
    model = row.model_or(settings.model)
    return is_funasr(model) and settings.provider.batch_size > 1


def hands_off(settings: Any, row: ItemRow, next_step: Action, delay_s: float) -> bool:
    """Whether the worker finishing a step of ``row`` queues ``next_step`` itself (so the
    step's ledger mark carries slack for that message, see FlowContext.due_at).

    Yes when it is due within COUNTDOWN_MAX_S, except a submission left to the sweeper.
    """
    if delay_s > COUNTDOWN_MAX_S:
        return False
    return not (next_step is Action.SUBMIT and left_to_sweeper(settings, row))


def hand_off(wctx: Any, prepared: ItemRow) -> bool:
    """Queue a just-prepared item's submit or transcribe if its mark allows for that
    message (then nothing needs to be read back); False if it is not this worker's to send."""
    action = after_prepare(mode_of(wctx, prepared))
    if not wctx.flow.handed_off(prepared, action, 0.0):
        return False
    send(wctx, Job(action, (prepared.id,), rows=(prepared,)), marked=True)
    return True


def after_submit(wctx: Any, rows: Sequence[ItemRow], provider_task: str | None) -> None:
    """After a submit step: queue the first poll of the new task, or whatever is next."""
    from workers import tasks

    first_s = wctx.settings.poll.first_s
    if provider_task is not None and wctx.flow.handed_off(rows[0], Action.POLL, first_s):
        tasks.poll.apply_async((provider_task,), countdown=first_s)
    else:
        dispatch_after(wctx, [r.id for r in rows])


def dispatch_after(wctx: Any, item_ids: Sequence[str]) -> int:
    """After a step: queue the next one for these items if it is due within a minute."""
    return dispatch_rows(wctx, wctx.ledger.get_many(item_ids))


def dispatch_rows(wctx: Any, fresh: Sequence[ItemRow]) -> int:
    """:func:`dispatch_after` for rows just read from the ledger."""
    now = utcnow()
    rows = [r for r in fresh if not r.state.terminal]
    if not rows:
        return 0
    soon = now + timedelta(seconds=COUNTDOWN_MAX_S)
    jobs = plan_jobs(
        rows,
        lambda r: mode_of(wctx, r),
        soon,
        prepare_room=len(rows),
        submit_room=len(rows),
        batch_size=lambda m: batch_size(wctx, m),
        default_model=wctx.settings.model,
    )
    sent = 0
    for job in jobs:
        if job.action is Action.SUBMIT and left_to_sweeper(wctx.settings, job.rows[0]):
            continue
        due = min((r.next_run_at for r in job.rows if r.next_run_at), default=now)
        send(wctx, job, countdown=max(0.0, (due - now).total_seconds()))
        sent += 1
    return sent
