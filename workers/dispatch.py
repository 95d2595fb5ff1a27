"""Send the jobs the scheduler hands out as Celery messages. Used after each task and by the
sweeper; what runs next is decided in :mod:`pipeline.flow.policy`, not here.

Before a job is sent its rows get ``next_run_at`` pushed to "now + redispatch_s", so the
sweeper does not send it again while the message waits; if the message is lost, the mark
lapses and the sweeper sends it anew.

Submissions and polls travel packed: one message carries up to
``distributed.jobs_per_message`` of them (:func:`packs`). A message costs a worker about
as much as a short step (receive, late ack, a Redis round trip each), and a pack's ledger
writes are one statement for all of its items. A packed submit's tasks get one packed poll,
and polls queued by one process within a moment of each other are packed too
(:mod:`workers.coalesce`), so chains started one item at a time merge.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from pipeline.flow.actions import Action, redispatch_slack
from pipeline.flow.plan import Job
from pipeline.ledger import ItemRow, utcnow
from pipeline.stages.submit import SubmitOutcome
from workers.app import app
from workers.coalesce import Coalescer
from workers.context import WorkerContext

# A message's arguments: JSON ids only. Task names are ``bulkscribe.<action>`` (workers/tasks.py).
_ARGS: dict[Action, Callable[[Job], tuple[Any, ...]]] = {
    Action.PREPARE: lambda job: (job.ids[0],),
    Action.TRANSCRIBE: lambda job: (job.ids[0],),
    Action.RECONCILE: lambda job: (job.ids[0],),
    Action.SUBMIT: lambda job: (list(job.ids),),
    Action.POLL: lambda job: (job.task_id,),
}


# A packed message's argument: the list of what each of its jobs would carry alone.
_PACKED: dict[Action, Callable[[Job], Any]] = {
    Action.SUBMIT: lambda job: list(job.ids),
    Action.POLL: lambda job: job.task_id,
}
# A burst is spread over at least this many messages however small its packs come out, so
# a few dozen jobs still run on as many workers at once as before.
SPREAD = 16


def task_name(action: Action) -> str:
    return f"bulkscribe.{action.value}"


def packs(jobs: Sequence[Job], most: int, spread: int = SPREAD) -> list[list[Job]]:
    """``jobs`` (one action) as messages: single jobs if the action takes no packs, else
    packs of at most ``most``, as even as can be, and never fewer than ``spread`` messages
    while there are that many jobs. Pure."""
    if not jobs:
        return []
    if jobs[0].action not in _PACKED or most <= 1:
        return [[job] for job in jobs]
    messages = max(math.ceil(len(jobs) / most), min(len(jobs), spread))
    size, larger = divmod(len(jobs), messages)  # the first ``larger`` get one job more
    bounds = [k * size + min(k, larger) for k in range(messages + 1)]
    return [list(jobs[a:b]) for a, b in itertools.pairwise(bounds)]


def in_step(timed: Sequence[tuple[Job, float]], most: int) -> list[tuple[list[Job], float]]:
    """Jobs due after various countdowns, as messages: jobs of one action whose countdowns
    lie within a tenth (at least 0.5 s) of the earliest of them share a message sent at
    that earliest. A poll may so come a little early, never late. Pure."""
    out: list[tuple[list[Job], float]] = []
    by_action: dict[Action, list[tuple[Job, float]]] = {}
    for job, countdown in timed:
        by_action.setdefault(job.action, []).append((job, countdown))
    for action, group in by_action.items():
        if action not in _PACKED:  # each at its own time
            out += [([job], countdown) for job, countdown in group]
            continue
        group.sort(key=lambda jc: jc[1])
        at = 0
        while at < len(group):
            start = group[at][1]
            end = at
            while end < len(group) and group[end][1] <= start + max(0.5, start / 10):
                end += 1
            out += [(pack, start) for pack in packs([j for j, _ in group[at:end]], most, 1)]
            at = end
    return out


def send(wctx: WorkerContext, job: Job, *, countdown: float = 0.0, marked: bool = False) -> None:
    """Queue ``job``; unless ``marked`` (the step that led here wrote a mark with slack for
    this message), first push its rows' ``next_run_at`` past the message's expected start."""
    send_pack(wctx, [job], countdown=countdown, marked=marked)


def send_pack(
    wctx: WorkerContext, jobs: Sequence[Job], *, countdown: float = 0.0, marked: bool = False
) -> None:
    """Queue ``jobs`` (one action) as one message: a single job as it always travelled,
    several as the list of their arguments."""
    if not marked:
        _mark(wctx, _rows(wctx, jobs), countdown)
    action = jobs[0].action
    args = _ARGS[action](jobs[0]) if len(jobs) == 1 else ([_PACKED[action](j) for j in jobs],)
    app.send_task(task_name(action), args=args, countdown=countdown)


def send_all(wctx: WorkerContext, jobs: Sequence[Job]) -> None:
    """Queue ``jobs`` now, after marking all of their rows at once (one UPDATE per state,
    not one per job: a sweep after an outage may queue thousands)."""
    _mark(wctx, [r for job in jobs for r in job.rows], 0.0)
    by_action: dict[Action, list[Job]] = {}
    for job in jobs:
        by_action.setdefault(job.action, []).append(job)
    for group in by_action.values():
        for pack in packs(group, _most(wctx)):
            send_pack(wctx, pack, marked=True)


def send_later(
    wctx: WorkerContext, timed: Sequence[tuple[Job, float]], *, marked: bool = False
) -> None:
    """Queue jobs each after its countdown, packed where they fall due together
    (:func:`in_step`). Packable jobs not due at once wait in the process a moment for
    company (:mod:`workers.coalesce`), their rows marked first."""
    for pack, countdown in in_step(timed, _most(wctx)):
        if countdown <= 0 or pack[0].action not in _PACKED or _most(wctx) <= 1:
            send_pack(wctx, pack, countdown=countdown, marked=marked)
            continue
        if not marked:
            _mark(wctx, _rows(wctx, pack), countdown)
        _held(wctx).add([(job, countdown) for job in pack])


def ship(wctx: WorkerContext, timed: Sequence[tuple[Job, float]]) -> None:
    """Send held jobs (marked already), packed where they fall due together."""
    for pack, countdown in in_step(timed, _most(wctx)):
        send_pack(wctx, pack, countdown=countdown, marked=True)


_HELD_LOCK = threading.Lock()


def _held(wctx: WorkerContext) -> Coalescer:
    with _HELD_LOCK:
        if wctx.held is None:
            wctx.held = Coalescer(functools.partial(ship, wctx))
        return wctx.held


def _rows(wctx: WorkerContext, jobs: Sequence[Job]) -> list[ItemRow]:
    bare = [i for job in jobs if not job.rows for i in job.ids]
    return [r for job in jobs for r in job.rows] + wctx.ledger.get_many(bare)


def _most(wctx: WorkerContext) -> int:
    return wctx.settings.distributed.jobs_per_message


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
    if action is Action.SUBMIT and wctx.gate.full():
        # At the in-flight cap the submission would only be refused: the item waits for
        # room as a refused one does, and the next task to end hands it room (refill) in
        # a pack with others. A fleet working through a long batch is at its cap nearly
        # all the time, so this spares a message per item.
        wctx.ledger.mark_due([prepared], utcnow() + timedelta(seconds=wctx.settings.poll.first_s))
        return True
    send(wctx, Job(action, (prepared.id,), rows=(prepared,)), marked=True)
    return True


def after_submit(
    wctx: WorkerContext, rows: Sequence[ItemRow], outcome: SubmitOutcome
) -> tuple[Job, float] | None:
    """After a submit step: the first poll of the new task, with its countdown, for the
    caller to send (a packed submit sends its tasks' first polls as one message); or queue
    whatever is next. Items refused at the in-flight cap get no message: :func:`refill`
    hands them room."""
    first_s = wctx.settings.poll.first_s
    task = outcome.task_id
    if task is not None and wctx.flow.handed_off(rows[0], Action.POLL, first_s):
        return Job(Action.POLL, tuple(r.id for r in rows), task_id=task), first_s
    if task is None and not outcome.waiting_for_room:
        dispatch_after(wctx, [r.id for r in rows])
    return None


def refill(wctx: WorkerContext, room: int = 1) -> int:
    """Provider tasks have ended, so ``room`` tasks' room under the in-flight cap is free: queue
    the submission of the items waiting longest for room now, not at the next sweep (a
    fleet at its cap otherwise left the provider a slot short until then). Only while the
    gate is full, so below the cap this costs one Redis read per ended task. Rows are taken
    by compare-and-set on their due time: two workers refilling at once send different
    items. Returns the number of jobs sent (in packs)."""
    if not wctx.gate.full():
        return 0
    settings = wctx.settings
    now = utcnow()
    # Items refused at the cap are due poll.first_s later (the embedded runner's pause).
    before = now + timedelta(seconds=settings.poll.first_s)
    waiting = wctx.ledger.waiting_for_room(before, limit=settings.provider.batch_size * room)
    until = now + timedelta(
        seconds=redispatch_slack(Action.SUBMIT, settings.distributed.redispatch_s)
    )
    jobs = wctx.scheduler.refill(waiting, before, room=room)
    taken = set(wctx.ledger.take_due([r for j in jobs for r in j.rows], before=before, until=until))
    ready = []
    for job in jobs:
        rows = tuple(r for r in job.rows if r.id in taken)
        if rows:
            ready.append(Job(job.action, tuple(r.id for r in rows), rows=rows))
    for pack in packs(ready, _most(wctx), spread=1):  # a packed poll's ended tasks: one pack
        send_pack(wctx, pack, marked=True)
    return len(ready)


def dispatch_after(wctx: WorkerContext, item_ids: Sequence[str]) -> int:
    """After a step: queue the next one for these items if it is due within the horizon."""
    return dispatch_rows(wctx, wctx.ledger.get_many(item_ids))


def dispatch_rows(wctx: WorkerContext, fresh: Sequence[ItemRow]) -> int:
    """:func:`dispatch_after` for rows just read from the ledger."""
    follow_ups = wctx.scheduler.follow_ups(fresh, utcnow())
    send_later(wctx, follow_ups)
    return len(follow_ups)
