"""Unit tests for the poll and reconcile decisions (pipeline.stages.poll,
pipeline.stages.reconcile, and DashScope's ``decide``): pure, on frozen task statuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.asr.dashscope import Done, Failed, PollLimits, TaskStatus, Wait, decide
from pipeline.asr.dashscope.tasks import FileResult
from pipeline.errors import FailureCode, ProviderRejected, TransientError
from pipeline.stages.poll import file_failure, on_query_error, task_failure
from pipeline.stages.reconcile import Candidate, Verdict, judge

LIMITS = PollLimits(first_s=2.0, max_s=60.0, give_up_after_s=3600.0)


@pytest.mark.parametrize(
    ("status", "polls", "waited_s", "expected"),
    [
        ("RUNNING", 0, 1.0, Wait(2.0)),
        ("PENDING", 3, 10.0, Wait(16.0)),
        ("RUNNING", 10, 100.0, Wait(60.0)),  # capped at max_s
        ("RUNNING", 0, 3601.0, FailureCode.POLL_TIMEOUT),
        ("FAILED", 0, 1.0, FailureCode.PROVIDER_FAILED),
        ("CANCELED", 0, 1.0, FailureCode.PROVIDER_FAILED),
        ("UNKNOWN", 0, 1.0, FailureCode.TASK_LOST),
        ("SUCCESS_WITH_NO_VALID_FRAGMENT", 0, 1.0, FailureCode.PROVIDER_FAILED),
    ],
)
def test_poll_decision(
    status: str, polls: int, waited_s: float, expected: Wait | FailureCode
) -> None:
    """Wait with backoff while the task runs; fail with a code for each way it cannot end."""
    decision = decide(TaskStatus("t", status), polls, waited_s, LIMITS)
    if isinstance(expected, Wait):
        assert decision == expected
    else:
        assert isinstance(decision, Failed) and decision.code is expected


def test_poll_decision_done_carries_the_files() -> None:
    """A SUCCEEDED task hands over every file's result, failed files included."""
    files = (FileResult("u1", "SUCCEEDED", "r1"), FileResult("u2", "FAILED", None, "X", "bad"))
    assert decide(TaskStatus("t", "SUCCEEDED", files), 0, 1.0, LIMITS) == Done(files)


def test_query_errors_wait_then_give_up() -> None:
    """A failed query waits at least max_s (or the provider's Retry-After); past the give-up
    time the task is abandoned with poll_timeout."""
    busy = TransientError(FailureCode.PROVIDER_THROTTLED, "429", retry_after_s=120.0)
    assert on_query_error("t", busy, 10.0, LIMITS) == Wait(120.0)
    down = TransientError(FailureCode.PROVIDER_ERROR, "502")
    assert on_query_error("t", down, 10.0, LIMITS) == Wait(60.0)
    gave_up = on_query_error("t", down, 3601.0, LIMITS)
    assert isinstance(gave_up, Failed) and gave_up.code is FailureCode.POLL_TIMEOUT
    assert gave_up.message == "task t unreachable after 3601 s: 502"


def test_task_and_file_failures_say_retry_or_fail() -> None:
    """A lost or stuck task is retried (submitted again); a task or file the provider
    refused fails the item; other file errors are retried."""
    lost = task_failure(Failed(FailureCode.TASK_LOST, "gone"))
    assert isinstance(lost, TransientError) and lost.code is FailureCode.TASK_LOST
    refused = task_failure(Failed(FailureCode.PROVIDER_FAILED, "task FAILED"))
    assert isinstance(refused, ProviderRejected)
    assert isinstance(file_failure("InvalidFile.DecodeFailed", "no audio"), ProviderRejected)
    assert isinstance(file_failure("NO_VALID_FRAGMENT", None), ProviderRejected)
    flaky = file_failure("InternalError", "try later")
    assert isinstance(flaky, TransientError) and flaky.code is FailureCode.PROVIDER_ERROR


@pytest.mark.parametrize(
    ("media_url", "candidates", "verdict"),
    [
        (None, [Candidate("t1", True, ("u",))], Verdict("absent")),  # nothing went out
        ("u", [], Verdict("absent")),
        ("u", [Candidate("t1", True, ("x", "y"))], Verdict("absent")),
        ("u", [Candidate("t1", False)], Verdict("unsure")),  # might be in there
        (
            "u",
            [Candidate("t1", False), Candidate("t2", True, ("x", "u"))],
            Verdict("found", "t2", ("x", "u")),  # its siblings come along
        ),
    ],
)
def test_reconcile_verdict(
    media_url: str | None, candidates: list[Candidate], verdict: Verdict
) -> None:
    """Found, unsure while a running task might hold the file, or absent: submit again."""
    assert judge(media_url, candidates) == verdict


def test_reconcile_reads_no_more_tasks_than_it_needs() -> None:
    """Candidates are read lazily: once the task is found, no other is asked about, and an
    item with no URL asks about none."""
    asked: list[str] = []

    def candidates() -> Iterator[Candidate]:
        for task_id, urls in (("t1", ("x",)), ("t2", ("u",)), ("t3", ("z",))):
            asked.append(task_id)
            yield Candidate(task_id, True, urls)

    assert judge("u", candidates()).task_id == "t2"
    assert asked == ["t1", "t2"]
    asked.clear()
    assert judge(None, candidates()) == Verdict("absent") and asked == []
