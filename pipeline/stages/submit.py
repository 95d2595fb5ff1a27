"""Submit: PREPARED → SUBMITTING → SUBMITTED, exactly once per attempt.

An item is claimed PREPARED → SUBMITTING with the URL it will be submitted under *before*
the request goes out, and moves to SUBMITTED with the provider's task id after. A process
that dies in between leaves a SUBMITTING item whose lease expires; :mod:`.reconcile` then
asks the provider whether a task for that URL exists before anything is sent again. The
request itself is DashScope's (pipeline/asr/dashscope); its parameters come from there too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

from structlog.contextvars import bound_contextvars

from pipeline.asr.dashscope import submit_parameters
from pipeline.errors import FailureCode, TransientError
from pipeline.flow.actions import Action
from pipeline.flow.claims import claim, keep_alive
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.ledger import ItemRow, utcnow
from pipeline.ledger.repo import ItemColumns, Move, add_timing
from pipeline.log import get_logger
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.stages.upload import early_url, publish
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What a submit step leaves its driver to do."""

    task_id: str | None = None  # the provider's task, once submitted: poll it
    # Refused at the in-flight cap: the items are due again ``poll.first_s`` later (when the
    # embedded runner asks again). Workers send nothing for them: a task that ends gives
    # its room to the item waiting longest (workers.dispatch.refill), the sweeper any left.
    waiting_for_room: bool = False


def submit_step(ctx: FlowContext, rows: Sequence[ItemRow]) -> SubmitOutcome:
    """PREPARED → SUBMITTED for a batch of items sharing one model (≤100 for Fun-ASR)."""
    return submit_groups(ctx, [rows])[0]


def submit_groups(ctx: FlowContext, groups: Sequence[Sequence[ItemRow]]) -> list[SubmitOutcome]:
    """:func:`submit_step` for several groups (a packed message), each its own provider
    task, one after another; the items submitted are recorded SUBMITTED together at the end,
    in one statement. Their claims are renewed until then."""
    outcomes: list[SubmitOutcome] = []
    sent: list[tuple[ItemRow, Move]] = []
    with ExitStack() as held:
        try:
            for rows in groups:
                outcome, moves = _submit(ctx, rows, held)
                outcomes.append(outcome)
                sent += moves
        finally:  # what reached the provider is recorded whatever happened after it
            moved = ctx.ledger.move_many(
                [move for _, move in sent],
                ItemState.SUBMITTING,
                ItemState.SUBMITTED,
                owner=ctx.owner,
            )
    for row, move in sent:
        if row.id in moved:
            log.info("submit.done", item_id=row.key, task_id=move.values.get("provider_task_id"))
    return outcomes


def _submit(
    ctx: FlowContext, rows: Sequence[ItemRow], held: ExitStack
) -> tuple[SubmitOutcome, list[tuple[ItemRow, Move]]]:
    """Claim one group and send it as one provider task: the outcome, and the moves that
    record it (left to the caller to make, together with other groups')."""
    claimed: list[ItemRow] = []
    with _admitted(ctx) as room:
        if room <= 0:
            ctx.ledger.mark_due(rows, utcnow() + timedelta(seconds=ctx.rules.poll.first_s))
            return SubmitOutcome(waiting_for_room=True), []
        for row in rows:
            early = early_url(ctx, row)
            early_columns: ItemColumns = {"media_url": early} if early else {}
            got = claim(ctx, row, ItemState.PREPARED, ItemState.SUBMITTING, **early_columns)
            if got is not None:
                claimed.append(got)
    if not claimed:
        return SubmitOutcome(), []
    model = claimed[0].model_or(ctx.rules.model)
    # Renewed while the URL is published, the request is out and until the caller records
    # it: a lapsed SUBMITTING claim is reconciled (asked of the provider), which must not
    # race a live submission.
    held.enter_context(keep_alive(ctx, *claimed))
    try:
        urls = [row.media_url or publish(ctx, row, model) for row in claimed]
        parameters = submit_parameters(model, ctx.rules.asr_options(claimed[0]))
        t0 = time.monotonic()
        submitted = ctx.client().submit_transcription(model, urls, parameters)
        now, seconds = utcnow(), time.monotonic() - t0
        ctx.emit("stage.done", stage="submit", seconds=seconds)
    except Exception as exc:
        for row in claimed:
            with bound_contextvars(batch_id=row.batch_id, item_id=row.key, stage="submit"):
                if _ambiguous(exc):
                    # The request may have reached the provider: ask before sending again.
                    reconcile_submitting(ctx, ctx.ledger.get(row.id) or row)
                else:
                    handle_failure(ctx, row, exc, back_to=ItemState.PREPARED)
        return SubmitOutcome(), []
    # ``tries`` is kept, not reset: a task that is lost or stuck sends its items back to
    # PREPARED with tries + 1, and resetting it here on every resubmission let such items
    # loop submit → give up → submit for ever, never reaching DEAD.
    moves = [
        (
            row,
            Move(
                row.id,
                {
                    "provider_task_id": submitted.task_id,
                    "submitted_at": now,
                    "polls": 0,
                    "failure": None,
                    "next_run_at": ctx.due_at(row, Action.POLL, ctx.rules.poll.first_s, now),
                    "timings": add_timing(row.timings, "submit", seconds),
                },
                {
                    "provider_task_id": submitted.task_id,
                    "provider_request_id": submitted.request_id,
                },
            ),
        )
        for row in claimed
    ]
    return SubmitOutcome(str(submitted.task_id)), moves


@contextmanager
def _admitted(ctx: FlowContext) -> Iterator[int]:
    if ctx.gate is None:
        yield 1
        return
    with ctx.gate.admit() as room:
        yield room


def _ambiguous(exc: BaseException) -> bool:
    """A timeout or dropped connection after sending: the task may or may not exist.

    Answers with a status (429, 5xx, 4xx) are given before a task is created (DashScope
    validates submissions synchronously), so those can simply be retried.
    """
    if not isinstance(exc, TransientError) or exc.code is FailureCode.PROVIDER_THROTTLED:
        return False
    status = exc.detail.get("http_status")
    return status is None or status in (408, 504)


__all__ = ["SubmitOutcome", "submit_groups", "submit_step"]
