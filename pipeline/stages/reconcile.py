"""Reconcile: a SUBMITTING item with no task id; did the provider get the request before
the submitter was lost?

The provider's task list is searched for a task our ledger does not know whose files
include this item's URL. :func:`judge` decides from those candidates, pure; it reads them
lazily, so the provider is asked about no more tasks than it takes to find the one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pipeline.errors import TransientError
from pipeline.flow.context import FlowContext
from pipeline.ledger import ItemRow, utcnow
from pipeline.log import get_logger
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider task our ledger does not know."""

    task_id: str
    finished: bool  # a running task's files cannot be read yet
    file_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["found", "unsure", "absent"]
    task_id: str | None = None
    file_urls: tuple[str, ...] = ()  # every file of the task found: its siblings come along


def judge(media_url: str | None, candidates: Iterable[Candidate]) -> Verdict:
    """Found (the task holding ``media_url``), unsure (a running task might), or absent
    (nothing went out, or no task has it: submit again)."""
    if not media_url:
        return Verdict("absent")  # the URL is written before sending: nothing went out
    unsure = False
    for candidate in candidates:
        if not candidate.finished:
            unsure = True
            continue
        if media_url in candidate.file_urls:
            return Verdict("found", candidate.task_id, candidate.file_urls)
    return Verdict("unsure" if unsure else "absent")


def reconcile_submitting(ctx: FlowContext, row: ItemRow) -> None:
    """A SUBMITTING item with no task id: did the provider get the request before we lost it?

    The provider's task list is searched for a task our ledger does not know whose files
    include this item's URL. While such an unknown task is still running its files cannot
    be read, so the item waits; it is submitted again only once no candidate is left.
    """
    try:
        verdict = judge(row.media_url, _candidates(ctx, row))
    except TransientError as exc:
        verdict = Verdict("unsure")
        log.info("reconcile.deferred", item_id=row.key, error=exc.message)
    task_id, urls = verdict.task_id, verdict.file_urls
    now = utcnow()
    if verdict.kind == "found":
        # A Fun-ASR task carries up to 100 files: every SUBMITTING item whose URL it holds
        # goes to SUBMITTED together, in one transaction. One at a time, the first item
        # adopted would make the task "known", and its siblings' own reconciliations would
        # skip it, find nothing and submit those files a second time.
        adopted = ctx.ledger.adopt_task(
            str(task_id), urls or (str(row.media_url),), submitted_at=row.updated_at or now
        )
        if row.id in adopted:
            log.info("reconcile.found", item_id=row.key, task_id=task_id, items=len(adopted))
    elif verdict.kind == "unsure":
        ctx.ledger.update_if(
            row.id,
            ItemState.SUBMITTING,
            lease_owner=None,
            lease_until=now + timedelta(seconds=ctx.rules.poll.max_s),
        )
    # Due at once: the mark it carried was for the submit message now known to be lost.
    elif ctx.ledger.move(
        row.id, ItemState.SUBMITTING, ItemState.PREPARED, media_url=None, next_run_at=None
    ):
        log.info("reconcile.resubmit", item_id=row.key)


def _candidates(ctx: FlowContext, row: ItemRow) -> Iterator[Candidate]:
    """The provider's recent tasks of ``row``'s model that our ledger does not know, each
    with every file URL it holds once finished; asked one by one, as they are read."""
    client = ctx.client()
    model = row.model_or(ctx.rules.model)
    listed = client.list_tasks(model=model)
    known = ctx.ledger.known_task_ids([t.task_id for t in listed])
    for summary in listed:
        if summary.task_id in known:
            continue
        status = client.query_task(summary.task_id)
        if not status.terminal:
            yield Candidate(summary.task_id, finished=False)
            continue
        urls = []
        for result in status.results:
            url = result.file_url
            if not url and result.transcription_url:  # filetrans does not echo it here
                url = str(client.fetch_result(result.transcription_url).get("file_url") or "")
            if url:
                urls.append(url)
        yield Candidate(summary.task_id, finished=True, file_urls=tuple(urls))


__all__ = ["Candidate", "Verdict", "judge", "reconcile_submitting"]
