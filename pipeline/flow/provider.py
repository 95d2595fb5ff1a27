"""Async provider steps: submit once per attempt, poll by schedule, persist promptly.

Exactly-once submission: an item is claimed PREPARED → SUBMITTING with the URL it will be
submitted under *before* the request goes out, and moves to SUBMITTED with the task id
after. A process that dies in between leaves a SUBMITTING item whose lease expires;
:func:`reconcile_submitting` then asks the provider whether a task for that URL exists
before anything is sent again. Polls never wait in a worker: a poll that finds the task
still running writes ``next_run_at`` and returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from structlog.contextvars import bound_contextvars

from pipeline.asr.dashscope import (
    Done,
    Failed,
    Wait,
    decide,
    file_outcomes,
    submit_parameters,
    transcripts_from_result,
)
from pipeline.errors import (
    FailureCode,
    PermanentError,
    PipelineError,
    ProviderRejected,
    TransientError,
    error_for,
)
from pipeline.flow.actions import Action
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.steps import claim, finish, keep_alive
from pipeline.ledger import ItemRow, utcnow
from pipeline.ledger.repo import ItemColumns, add_timing
from pipeline.log import get_logger
from pipeline.states import ItemState
from pipeline.transcript import Transcript

log = get_logger("bulkscribe.flow")


def submit_step(ctx: FlowContext, rows: Sequence[ItemRow]) -> str | None:
    """PREPARED → SUBMITTED for a batch of items sharing one model (≤100 for Fun-ASR).

    The provider's task id once submitted, else None.
    """
    claimed: list[ItemRow] = []
    with _admitted(ctx) as room:
        if room <= 0:
            # At the in-flight cap: look again shortly, when a task may have finished.
            _defer(ctx, rows, ctx.poll.first_s)
            return None
        for row in rows:
            early = _early_url(ctx, row)
            early_url: ItemColumns = {"media_url": early} if early else {}
            got = claim(ctx, row, ItemState.PREPARED, ItemState.SUBMITTING, **early_url)
            if got is not None:
                claimed.append(got)
    if not claimed:
        return None
    model = claimed[0].model_or(ctx.model)
    # Renewed while the URL is published and the request is out: a lapsed SUBMITTING
    # claim is reconciled (asked of the provider), which must not race a live submission.
    with keep_alive(ctx, *claimed):
        try:
            urls = [row.media_url or _publish(ctx, row, model) for row in claimed]
            parameters = submit_parameters(model, ctx.asr_options(claimed[0]))
            t0 = time.monotonic()
            submitted = _client(ctx).submit_transcription(model, urls, parameters)
            now, seconds = utcnow(), time.monotonic() - t0
            ctx.emit("stage.done", stage="submit", seconds=seconds)
            for row in claimed:
                # ``tries`` is kept, not reset: a task that is lost or stuck sends its items
                # back to PREPARED with tries + 1, and resetting it here on every resubmission
                # let such items loop submit → give up → submit for ever, never reaching DEAD.
                ok = ctx.ledger.move(
                    row.id,
                    ItemState.SUBMITTING,
                    ItemState.SUBMITTED,
                    owner=ctx.owner,
                    provider_task_id=submitted.task_id,
                    submitted_at=now,
                    polls=0,
                    failure=None,
                    next_run_at=ctx.due_at(row, Action.POLL, ctx.poll.first_s, now),
                    timings=add_timing(row.timings, "submit", seconds),
                    attempt={
                        "provider_task_id": submitted.task_id,
                        "provider_request_id": submitted.request_id,
                    },
                )
                if ok:
                    log.info(
                        "submit.done", item_id=row.key, task_id=submitted.task_id, files=len(urls)
                    )
            return str(submitted.task_id)
        except Exception as exc:
            for row in claimed:
                with bound_contextvars(batch_id=row.batch_id, item_id=row.key, stage="submit"):
                    if _ambiguous(exc):
                        # The request may have reached the provider: ask before sending again.
                        reconcile_submitting(ctx, ctx.ledger.get(row.id) or row)
                    else:
                        handle_failure(ctx, row, exc, back_to=ItemState.PREPARED)
            return None


@contextmanager
def _admitted(ctx: FlowContext) -> Iterator[int]:
    if ctx.gate is None:
        yield 1
        return
    with ctx.gate.admit() as room:
        yield room


def _defer(ctx: FlowContext, rows: Sequence[ItemRow], delay_s: float) -> None:
    ctx.ledger.mark_due(rows, utcnow() + timedelta(seconds=delay_s))


def _client(ctx: FlowContext) -> Any:
    if ctx.provider is None:
        raise PermanentError(
            FailureCode.PROVIDER_AUTH, "DashScope is not configured: set DASHSCOPE_API_KEY"
        )
    return ctx.provider()


def _early_url(ctx: FlowContext, row: ItemRow) -> str | None:
    """The URL, when publishing is side-effect free: then it is written with the claim."""
    if ctx.publisher is None or not ctx.publisher.before_claim:
        return None
    return _url(ctx, row, row.model_or(ctx.model))


def _url(ctx: FlowContext, row: ItemRow, model: str) -> str:
    if ctx.publisher is None:
        raise PermanentError(FailureCode.CONFIG_INVALID, "no way to publish audio for the provider")
    return ctx.publisher.publish(str(row.media_key), ctx.media, ctx.workdir(row), model)


def _publish(ctx: FlowContext, row: ItemRow, model: str) -> str:
    """The provider-facing URL, written to the ledger before the submit goes out."""
    url = _url(ctx, row, model)
    if not ctx.ledger.update_if(row.id, ItemState.SUBMITTING, media_url=url):
        raise TransientError(FailureCode.LEASE_EXPIRED, f"{row.key}: claim lost before submit")
    return url


def _ambiguous(exc: BaseException) -> bool:
    """A timeout or dropped connection after sending: the task may or may not exist.

    Answers with a status (429, 5xx, 4xx) are given before a task is created (DashScope
    validates submissions synchronously), so those can simply be retried.
    """
    if not isinstance(exc, TransientError) or exc.code is FailureCode.PROVIDER_THROTTLED:
        return False
    status = exc.detail.get("http_status")
    return status is None or status in (408, 504)


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
    if not rows:
        return PollOutcome()
    first = rows[0]
    waited = (utcnow() - (first.submitted_at or utcnow())).total_seconds()
    with bound_contextvars(task_id=task_id, stage="poll"):
        try:
            t0 = time.monotonic()
            status = _client(ctx).query_task(task_id)
            ctx.emit("stage.done", stage="poll", seconds=time.monotonic() - t0)
        except TransientError as exc:
            ctx.emit("provider.error", code=str(exc.code))
            if waited > ctx.poll.give_up_after_s:
                # Unreachable for longer than any job may take: submit again (or give up
                # once the items' retries are spent) instead of polling for ever.
                timeout = TransientError(
                    FailureCode.POLL_TIMEOUT,
                    f"task {task_id} unreachable after {waited:.0f} s: {exc.message}",
                )
                for row in rows:
                    handle_failure(ctx, row, timeout, back_to=ItemState.PREPARED)
                return PollOutcome(read_back=True)
            # The provider or the network hiccuped: that says nothing about the task, so
            # try again later without spending the items' retries.
            delay = max(ctx.poll.max_s, exc.retry_after_s or 0.0)
            log.info("poll.error", error=exc.message, delay_s=delay)
            return _schedule(ctx, rows, delay, polls=first.polls)
        except Exception as exc:
            for row in rows:
                handle_failure(ctx, row, exc)
            return PollOutcome(read_back=True)
        decision = decide(status, first.polls, waited, ctx.poll)
        if isinstance(decision, Wait):
            return _schedule(ctx, rows, decision.seconds, polls=first.polls + 1)
        if isinstance(decision, Failed):
            log.info("poll.failed", code=str(decision.code), error=decision.message)
            error = _task_failure(decision)
            for row in rows:
                handle_failure(ctx, row, error, back_to=ItemState.PREPARED)
            return PollOutcome(read_back=True)
        assert isinstance(decision, Done)
        outcomes = file_outcomes(status, [str(r.media_url) for r in rows])
        persisted = []
        for row in rows:
            outcome = outcomes[str(row.media_url)]
            if outcome.succeeded:
                if persist_step(ctx, row, str(outcome.transcription_url)):
                    persisted.append(row.id)
            else:
                handle_failure(
                    ctx,
                    row,
                    _file_failure(outcome.code, outcome.message),
                    back_to=ItemState.PREPARED,
                )
        return PollOutcome(read_back=len(persisted) < len(rows), succeeded=tuple(persisted))


def _schedule(
    ctx: FlowContext, rows: Sequence[ItemRow], delay_s: float, *, polls: int
) -> PollOutcome:
    """The task's items wait ``delay_s`` for their next poll (one statement for them all)."""
    ctx.ledger.mark_due(rows, ctx.due_at(rows[0], Action.POLL, delay_s), polls=polls)
    handed = ctx.handed_off(rows[0], Action.POLL, delay_s)
    return PollOutcome(again_in_s=delay_s if handed else None, waiting=True)


def _task_failure(decision: Failed) -> PipelineError:
    # A lost or stuck task is the provider's trouble, not the file's: submit again (as a
    # retry of this attempt). A task that FAILED on its own is final.
    return error_for(decision.code, decision.message, detail=dict(decision.detail))


def _file_failure(code: str | None, message: str | None) -> PipelineError:
    detail = {"provider_code": code, "provider_message": message}
    text = f"provider could not transcribe the file: {code}: {message}"
    if (code or "").startswith("InvalidFile") or code == "NO_VALID_FRAGMENT":
        return ProviderRejected(FailureCode.PROVIDER_FAILED, text, detail=detail)
    return TransientError(FailureCode.PROVIDER_ERROR, text, detail=detail)


def persist_step(ctx: FlowContext, row: ItemRow, result_url: str) -> bool:
    """SUBMITTED → SUCCEEDED: fetch the result while its URL is valid, write the outputs.
    True once the item is SUCCEEDED."""
    claimed = claim(ctx, row, ItemState.SUBMITTED, ItemState.PERSISTING)
    if claimed is None:
        return False
    with (
        bound_contextvars(
            batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt, stage="persist"
        ),
        keep_alive(ctx, claimed),
    ):
        try:
            document = _client(ctx).fetch_result(result_url)
            offset_s = claimed.facts.offset_s if claimed.facts else 0.0
            offset_ms = int(round(offset_s * 1000))
            channel = claimed.request.channel
            transcripts = [
                _relabel(t.shifted(offset_ms), channel) for t in transcripts_from_result(document)
            ]
            done = finish(ctx, claimed, transcripts or [Transcript(channel_id=channel or 0)])
            log.info("persist.done", sentences=sum(len(t.sentences) for t in transcripts))
            return done
        except PipelineError as exc:
            # result_expired (the 24 h result URL lapsed) is transient: transcribe again.
            handle_failure(ctx, claimed, exc, back_to=ItemState.PREPARED)
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
    return False


def _relabel(t: Transcript, channel: int | None) -> Transcript:
    # We send the provider one picked channel as mono; its channel 0 is the source's N.
    from dataclasses import replace

    return replace(t, channel_id=channel) if channel is not None else t


def reconcile_submitting(ctx: FlowContext, row: ItemRow) -> None:
    """A SUBMITTING item with no task id: did the provider get the request before we lost it?

    The provider's task list is searched for a task our ledger does not know whose files
    include this item's URL. While such an unknown task is still running its files cannot
    be read, so the item waits; it is submitted again only once no candidate is left.
    """
    try:
        verdict, task_id, urls = _find_lost_task(ctx, row)
    except TransientError as exc:
        verdict, task_id, urls = "unsure", None, ()
        log.info("reconcile.deferred", item_id=row.key, error=exc.message)
    now = utcnow()
    if verdict == "found":
        # A Fun-ASR task carries up to 100 files: every SUBMITTING item whose URL it holds
        # goes to SUBMITTED together, in one transaction. One at a time, the first item
        # adopted would make the task "known", and its siblings' own reconciliations would
        # skip it, find nothing and submit those files a second time.
        adopted = ctx.ledger.adopt_task(
            str(task_id), urls or (str(row.media_url),), submitted_at=row.updated_at or now
        )
        if row.id in adopted:
            log.info("reconcile.found", item_id=row.key, task_id=task_id, items=len(adopted))
    elif verdict == "unsure":
        ctx.ledger.update_if(
            row.id,
            ItemState.SUBMITTING,
            lease_owner=None,
            lease_until=now + timedelta(seconds=ctx.poll.max_s),
        )
    # Due at once: the mark it carried was for the submit message now known to be lost.
    elif ctx.ledger.move(
        row.id, ItemState.SUBMITTING, ItemState.PREPARED, media_url=None, next_run_at=None
    ):
        log.info("reconcile.resubmit", item_id=row.key)


def _find_lost_task(ctx: FlowContext, row: ItemRow) -> tuple[str, str | None, tuple[str, ...]]:
    """(verdict, task id, every file URL of that task) for a SUBMITTING item."""
    if not row.media_url:
        return "absent", None, ()  # the URL is written before sending: nothing went out
    client = _client(ctx)
    model = row.model_or(ctx.model)
    listed = client.list_tasks(model=model)
    known = ctx.ledger.known_task_ids([t.task_id for t in listed])
    unsure = False
    for summary in listed:
        if summary.task_id in known:
            continue
        status = client.query_task(summary.task_id)
        if not status.terminal:
            unsure = True
            continue
        urls = []
        for result in status.results:
            url = result.file_url
            if not url and result.transcription_url:  # filetrans does not echo it here
                url = str(client.fetch_result(result.transcription_url).get("file_url") or "")
            if url:
                urls.append(url)
        if row.media_url in urls:
            return "found", summary.task_id, tuple(urls)
    return ("unsure", None, ()) if unsure else ("absent", None, ())


__all__ = ["PollOutcome", "persist_step", "poll_step", "reconcile_submitting", "submit_step"]
