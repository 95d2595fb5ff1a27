"""Poll decisions, one row per branch, and per-file outcomes of finished tasks."""

from __future__ import annotations

import pytest

from pipeline.asr.dashscope import (
    Done,
    Failed,
    FileResult,
    PollLimits,
    TaskStatus,
    Wait,
    decide,
    file_outcomes,
)
from pipeline.errors import FailureCode
from pipeline.settings import PollSettings

LIMITS = PollLimits(first_s=2.0, max_s=60.0, give_up_after_s=3600.0)
OK = FileResult("https://a/x.wav", "SUCCEEDED", "https://oss/x.json")
BAD = FileResult(
    "https://a/y.wav",
    "FAILED",
    None,
    "InvalidFile.DownloadFailed",
    "The audio file cannot be downloaded.",
)


def _status(state: str, **kw) -> TaskStatus:
    return TaskStatus("t-1", state, **kw)


def _summary(decision) -> tuple:
    """A decision reduced to what distinguishes its branch."""
    match decision:
        case Done(results):
            return ("done", results)
        case Wait(seconds):
            return ("wait", seconds)
        case Failed(code):
            return ("failed", code)
    raise AssertionError(decision)


@pytest.mark.parametrize(
    ("status", "polls", "waited_s", "expected"),
    [
        (_status("SUCCEEDED", results=(OK, BAD)), 3, 30.0, ("done", (OK, BAD))),
        (_status("FAILED", code="InternalError"), 1, 5.0, ("failed", FailureCode.PROVIDER_FAILED)),
        (_status("CANCELED"), 0, 1.0, ("failed", FailureCode.PROVIDER_FAILED)),
        (_status("UNKNOWN"), 0, 0.0, ("failed", FailureCode.TASK_LOST)),
        (
            _status("SUCCESS_WITH_NO_VALID_FRAGMENT"),
            2,
            10.0,
            ("failed", FailureCode.PROVIDER_FAILED),
        ),
        (_status("RUNNING"), 40, 3601.0, ("failed", FailureCode.POLL_TIMEOUT)),
        (_status("PENDING"), 0, 0.0, ("wait", 2.0)),
        (_status("RUNNING"), 3, 20.0, ("wait", 16.0)),
        (_status("RUNNING"), 12, 900.0, ("wait", 60.0)),
        (_status("SUSPENDED"), 1, 10.0, ("wait", 4.0)),
    ],
    ids=[
        "succeeded",
        "failed",
        "canceled",
        "unknown",
        "unexpected-status",
        "give-up",
        "first-wait",
        "growing",
        "capped",
        "suspended",
    ],
)
def test_decide(status: TaskStatus, polls: int, waited_s: float, expected: tuple) -> None:
    """Each task state and elapsed time maps to exactly one branch."""
    assert _summary(decide(status, polls, waited_s, LIMITS)) == expected


def test_decide_failed_keeps_the_provider_facts() -> None:
    """A FAILED task's decision carries the provider's message, code and ids."""
    status = _status(
        "FAILED",
        code="InvalidFile.DownloadFailed",
        message="cannot be downloaded",
        request_id="r-1",
    )
    assert decide(status, 1, 5.0, LIMITS) == Failed(
        FailureCode.PROVIDER_FAILED,
        "task FAILED: cannot be downloaded",
        {
            "task_id": "t-1",
            "provider_status": "FAILED",
            "provider_code": "InvalidFile.DownloadFailed",
            "provider_message": "cannot be downloaded",
            "request_id": "r-1",
        },
    )


def test_decide_unknown_says_why() -> None:
    """The task_lost message names the likely causes (24 h expiry, other key or region)."""
    decision = decide(_status("UNKNOWN"), 0, 0.0, LIMITS)
    assert isinstance(decision, Failed)
    assert "24 h" in decision.message


def test_decide_terminal_wins_over_give_up() -> None:
    """A task that finished late is still Done, not timed out."""
    assert decide(_status("SUCCEEDED", results=(OK,)), 99, 99999.0, LIMITS) == Done((OK,))


def test_decide_accepts_poll_settings() -> None:
    """The settings slice works as limits."""
    assert decide(_status("PENDING"), 0, 0.0, PollSettings()) == Wait(2.0)


def test_file_outcomes_partial_failure() -> None:
    """A SUCCEEDED Fun-ASR task splits into a succeeded and a failed file."""
    outcomes = file_outcomes(
        _status("SUCCEEDED", results=(OK, BAD)), ["https://a/x.wav", "https://a/y.wav"]
    )
    assert outcomes == {"https://a/x.wav": OK, "https://a/y.wav": BAD}
    assert [o.succeeded for o in outcomes.values()] == [True, False]


def test_file_outcomes_names_the_filetrans_result() -> None:
    """Filetrans' unnamed result is given the one submitted URL."""
    unnamed = FileResult("", "SUCCEEDED", "https://oss/r.json")
    outcomes = file_outcomes(_status("SUCCEEDED", results=(unnamed,)), ["https://a/z.mp3"])
    assert outcomes == {
        "https://a/z.mp3": FileResult("https://a/z.mp3", "SUCCEEDED", "https://oss/r.json")
    }


def test_file_outcomes_missing_file_carries_the_task_failure() -> None:
    """A submitted URL without a result is FAILED with the task's code and message."""
    status = _status("FAILED", code="InternalError", message="boom")
    outcomes = file_outcomes(status, ["https://a/q.wav"])
    assert outcomes == {
        "https://a/q.wav": FileResult("https://a/q.wav", "FAILED", None, "InternalError", "boom")
    }


def test_file_outcomes_without_urls_returns_what_was_reported() -> None:
    """Without the submitted list the reported results are keyed by their file_url."""
    assert file_outcomes(_status("SUCCEEDED", results=(OK, BAD))) == {
        OK.file_url: OK,
        BAD.file_url: BAD,
    }


@pytest.mark.parametrize(
    ("queued_s", "waited_s", "expected"),
    [
        (9.0, 10.0, 1.0),  # queued 9 s, running 1 s: asked at 2 s of its run, not at 16 s
        (9.0, 10.9, 0.5),  # at 1.9 s of its run: not again at once, first_s / 4 later
        (9.0, 11.5, 1.5),  # at 2.5 s: the next check is at 4 s
        (0.0, 5.0, 3.0),  # not queued: the usual pace, 2, 4, 8 s...
        (30.0, 130.0, 24.0),  # 100 s in: 2, 4, 8, 16, 32, 64, then every max_s: 124 s
        (12.0, 10.0, 4.0),  # our clock behind the provider's: from the start of the run
        (2e8, 10.0, 60.0),  # a start years after the submission: never past max_s
    ],
)
def test_running_task_is_polled_at_the_pace_of_its_run(
    queued_s: float, waited_s: float, expected: float
) -> None:
    """A RUNNING task that says when it started is polled at first_s, 2·first_s, 4·first_s
    ... of its run: time in the provider's queue does not stretch the wait for its end."""
    status = _status("RUNNING", queued_s=queued_s)
    assert decide(status, 3, waited_s, LIMITS) == Wait(expected)


def test_pending_and_unknown_start_keep_the_submission_pace() -> None:
    """Without a start time (queued, or the provider left it out), polls back off from the
    submission, as before."""
    assert decide(_status("PENDING"), 3, 20.0, LIMITS) == Wait(16.0)
    assert decide(_status("RUNNING", queued_s=None), 3, 20.0, LIMITS) == Wait(16.0)
