"""Poll: ask the provider once where a task stands; never wait in a worker.

What the answer means (done, wait how long, failed) is DashScope's ``decide``
(pipeline/asr/dashscope/polling.py); what a failure does to the item is decided here by
:func:`task_failure` and :func:`file_failure`, pure. A poll that finds the task still
running writes ``next_run_at`` and returns; finished files go to :mod:`.persist`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from structlog.contextvars import bound_contextvars

from pipeline.asr.dashscope import Done, Failed, Wait, decide, file_outcomes
from pipeline.asr.dashscope.polling import PollLimitsLike
from pipeline.errors import FailureCode, PipelineError, ProviderRejected, TransientError, error_for
from pipeline.flow.actions import Action
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.ledger import ItemRow, utcnow
from pipeline.log import get_logger
from pipeline.stages.persist import persist_many
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What a poll leaves its driver to do. Neither: nothing (all persisted, or the next
    poll is far enough off to be the sweeper's)."""

    again_in_s: float | None = None  # queue the next poll then (the items' mark allows it)
    read_back: bool = False  # items failed or went back for retry: dispatch from the ledger
    waiting: bool = False  # the task is still running
    succeeded: tuple[str, ...] = ()  # ids of the items this poll persisted


def poll_step(ctx: FlowContext, task_id: str, rows: Sequence[ItemRow] | None = None) -> PollOutcome:
    """Query one provider task; schedule the next poll, or finish/fail its items.
    ``rows``: the task's SUBMITTED items, if the caller has just read them."""
    if rows is None:
        rows = [r for r in ctx.ledger.by_task(task_id) if r.state is ItemState.SUBMITTED]
    return poll_tasks(ctx, {task_id: rows})[task_id]


def poll_tasks(ctx: FlowContext, tasks: Mapping[str, Sequence[ItemRow]]) -> dict[str, PollOutcome]:
    """:func:`poll_step` for several provider tasks (a packed message), each with its
    SUBMITTED items: the tasks are queried one by one, and the items of those that are done
    persisted together (:func:`persist_many`, a few statements for them all)."""
    outcomes: dict[str, PollOutcome] = {}
    finished: dict[str, list[tuple[ItemRow, str]]] = {}  # done tasks: their files' results
    for task_id, rows in tasks.items():
        if not rows:
            outcomes[task_id] = PollOutcome()
            continue
        with bound_contextvars(task_id=task_id, stage="poll"):
            answer = _query(ctx, task_id, rows)
        if isinstance(answer, PollOutcome):
            outcomes[task_id] = answer
        else:
            finished[task_id] = answer
    results = [result for done in finished.values() for result in done]
    persisted = set(persist_many(ctx, results, close=False)) if results else set()
    # Whether a batch is finished is asked once for all the items persisted here.
    for batch_id in dict.fromkeys(r.batch_id for r, _ in results if r.id in persisted):
        ctx.item_finished(batch_id)
    for task_id, done in finished.items():
        ok = tuple(r.id for r, _ in done if r.id in persisted)
        outcomes[task_id] = PollOutcome(read_back=len(ok) < len(tasks[task_id]), succeeded=ok)
    return outcomes


def _query(
    ctx: FlowContext, task_id: str, rows: Sequence[ItemRow]
) -> PollOutcome | list[tuple[ItemRow, str]]:
    """Ask where one task stands. Still running, failed or unreachable: what the driver
    does next. Done: its files' failures are recorded, and the items whose files succeeded
    come back with their result URLs, to be persisted."""
    first = rows[0]
    waited = (utcnow() - (first.submitted_at or utcnow())).total_seconds()
    try:
        t0 = time.monotonic()
        status = ctx.client().query_task(task_id)
        ctx.emit("stage.done", stage="poll", seconds=time.monotonic() - t0)
    except TransientError as exc:
        ctx.emit("provider.error", code=str(exc.code))
        unreachable = on_query_error(task_id, exc, waited, ctx.rules.poll)
        if isinstance(unreachable, Failed):
            timeout = TransientError(unreachable.code, unreachable.message)
            for row in rows:
                handle_failure(ctx, row, timeout, back_to=ItemState.PREPARED)
            return PollOutcome(read_back=True)
        log.info("poll.error", error=exc.message, delay_s=unreachable.seconds)
        return _schedule(ctx, rows, unreachable.seconds, polls=first.polls)
    except Exception as exc:
        for row in rows:
            handle_failure(ctx, row, exc)
        return PollOutcome(read_back=True)
    decision = decide(status, first.polls, waited, ctx.rules.poll)
    if isinstance(decision, Wait):
        return _schedule(ctx, rows, decision.seconds, polls=first.polls + 1)
    if isinstance(decision, Failed):
        log.info("poll.failed", code=str(decision.code), error=decision.message)
        error = task_failure(decision)
        for row in rows:
            handle_failure(ctx, row, error, back_to=ItemState.PREPARED)
        return PollOutcome(read_back=True)
    assert isinstance(decision, Done)
    files = file_outcomes(status, [str(r.media_url) for r in rows])
    succeeded: list[tuple[ItemRow, str]] = []
    for row in rows:
        outcome = files[str(row.media_url)]
        if outcome.succeeded:
            succeeded.append((row, str(outcome.transcription_url)))
        else:
            handle_failure(
                ctx, row, file_failure(outcome.code, outcome.message), back_to=ItemState.PREPARED
            )
    return succeeded


def _schedule(
    ctx: FlowContext, rows: Sequence[ItemRow], delay_s: float, *, polls: int
) -> PollOutcome:
    """The task's items wait ``delay_s`` for their next poll (one statement for them all)."""
    ctx.ledger.mark_due(rows, ctx.due_at(rows[0], Action.POLL, delay_s), polls=polls)
    handed = ctx.handed_off(rows[0], Action.POLL, delay_s)
    return PollOutcome(again_in_s=delay_s if handed else None, waiting=True)


def on_query_error(
    task_id: str, exc: TransientError, waited_s: float, limits: PollLimitsLike
) -> Wait | Failed:
    """A query that failed for a passing reason: ask again later (without spending the
    items' retries: it says nothing about the task), or, unreachable for longer than any
    job may take, give up on the task so its items are submitted again."""
    if waited_s > limits.give_up_after_s:
        return Failed(
            FailureCode.POLL_TIMEOUT,
            f"task {task_id} unreachable after {waited_s:.0f} s: {exc.message}",
        )
    return Wait(max(limits.max_s, exc.retry_after_s or 0.0))


def task_failure(decision: Failed) -> PipelineError:
    # A lost or stuck task is the provider's trouble, not the file's: submit again (as a
    # retry of this attempt). A task that FAILED on its own is final.
    return error_for(decision.code, decision.message, detail=dict(decision.detail))


def file_failure(code: str | None, message: str | None) -> PipelineError:
    detail = {"provider_code": code, "provider_message": message}
    text = f"provider could not transcribe the file: {code}: {message}"
    if (code or "").startswith("InvalidFile") or code == "NO_VALID_FRAGMENT":
        return ProviderRejected(FailureCode.PROVIDER_FAILED, text, detail=detail)
    return TransientError(FailureCode.PROVIDER_ERROR, text, detail=detail)


__all__ = [
    "PollOutcome",
    "file_failure",
    "on_query_error",
    "poll_step",
    "poll_tasks",
    "task_failure",
]
