"""Polling is a decision, not a loop: what to do after one task query.

:func:`decide` is pure; the poll stage acts on its answer (write ``next_poll_at`` on
:class:`Wait`, fetch results on :class:`Done`, fail the items on :class:`Failed`) and returns,
so a 12-hour job never pins a worker. :func:`file_outcomes` splits a finished Fun-ASR task
into per-file results: a SUCCEEDED task may still hold FAILED files (§3.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pipeline.asr.dashscope.tasks import (
    CANCELED,
    FAILED,
    SUCCEEDED,
    UNKNOWN,
    FileResult,
    TaskStatus,
)
from pipeline.errors import FailureCode

WAITING = frozenset({"PENDING", "RUNNING", "SUSPENDED"})


class PollLimitsLike(Protocol):
    """``pipeline.settings.PollSettings`` fits; so does :class:`PollLimits`."""

    @property
    def first_s(self) -> float: ...
    @property
    def max_s(self) -> float: ...
    @property
    def give_up_after_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PollLimits:
    first_s: float = 2.0
    max_s: float = 60.0
    give_up_after_s: float = 14 * 3600.0  # past the provider's 12 h job limit


@dataclass(frozen=True, slots=True)
class Done:
    results: tuple[FileResult, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Failed:
    code: FailureCode
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)


PollDecision = Done | Wait | Failed


def decide(status: TaskStatus, polls: int, waited_s: float, limits: PollLimitsLike) -> PollDecision:
    """Stop, wait or give up after the ``polls``-th query (0 for the first)."""
    state = status.status
    detail = _detail(status)
    if state == SUCCEEDED:
        return Done(status.results)
    if state in (FAILED, CANCELED):
        reason = status.message or status.code or state
        return Failed(FailureCode.PROVIDER_FAILED, f"task {state}: {reason}", detail)
    if state == UNKNOWN:
        return Failed(
            FailureCode.TASK_LOST,
            f"task {status.task_id} is unknown to DashScope (expired after 24 h, "
            "or submitted with another key or region)",
            detail,
        )
    if state not in WAITING:
        # e.g. the community-reported SUCCESS_WITH_NO_VALID_FRAGMENT: waiting on a status we
        # cannot read would sit out the whole give-up period for nothing.
        return Failed(FailureCode.PROVIDER_FAILED, f"unexpected task status {state!r}", detail)
    if waited_s > limits.give_up_after_s:
        return Failed(FailureCode.POLL_TIMEOUT, f"still {state} after {waited_s:.0f} s", detail)
    if state == "RUNNING" and status.queued_s is not None:
        return Wait(seconds=until_next_check(waited_s - status.queued_s, limits))
    return Wait(seconds=min(limits.first_s * 2 ** min(polls, 30), limits.max_s))


def until_next_check(ran_s: float, limits: PollLimitsLike) -> float:
    """Seconds to the next poll of a task that has been running ``ran_s``: polls fall at
    first_s, 2·first_s, 4·first_s, ... (steps of at most max_s) of its run, not of the time
    since it was submitted. Counted from submission, a task that waited in the provider's
    queue was polled at the pace of the queue: one that queued 9 s and ran 2 s was seen done
    at 16 s, holding a place under the in-flight cap (and its output) 5 s for nothing. At
    least a quarter of first_s, so a task just short of a check is not asked twice at once;
    at most max_s, whatever the provider's times say (a start said to be far in the future
    must not put off the next poll for longer).
    """
    check, step = limits.first_s, limits.first_s
    while check <= ran_s:
        check += step
        step = min(2 * step, limits.max_s)
    return min(max(check - ran_s, limits.first_s / 4), limits.max_s)


def file_outcomes(
    status: TaskStatus, file_urls: Sequence[str] | None = None
) -> dict[str, FileResult]:
    """Each file's result, keyed by the URL that was submitted.

    Results are matched on ``file_url`` (echoed exactly, §3.3). Filetrans does not echo it,
    so its single result is given the single submitted URL. A submitted URL with no result
    (a FAILED filetrans task, or a short ``results`` list) gets a FAILED result carrying the
    task's code and message. Without ``file_urls``, results are returned as reported.
    """
    by_url = {r.file_url: r for r in status.results if r.file_url}
    if file_urls is None:
        return by_url
    unnamed = [r for r in status.results if not r.file_url]
    out: dict[str, FileResult] = {}
    for url in file_urls:
        result = by_url.get(url)
        if result is None and len(file_urls) == 1 and len(unnamed) == 1:
            result = replace(unnamed[0], file_url=url)
        if result is None:
            result = FileResult(
                url,
                FAILED,
                None,
                status.code or "MissingResult",
                status.message or f"task {status.status} without a result for this file",
            )
        out[url] = result
    return out


def _detail(status: TaskStatus) -> dict[str, Any]:
    pairs = (
        ("task_id", status.task_id),
        ("provider_status", status.status),
        ("provider_code", status.code),
        ("provider_message", status.message),
        ("request_id", status.request_id),
    )
    return {k: v for k, v in pairs if v}
