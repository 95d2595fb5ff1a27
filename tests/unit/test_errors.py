"""Unit tests for pipeline.errors: which failures are retryable, checked against the code.

Retry-or-fail is decided by the branch an error is raised as (TransientError or not); the
table ``TRANSIENT_CODES`` says which branch each code is raised as, and re-runs of failures
recorded before the ledger kept the flag fall back on it. These tests hold the table to what
``pipeline/`` really raises.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline import errors
from pipeline.errors import (
    RAISED_BOTH_WAYS,
    TRANSIENT_CODES,
    FailureCode,
    PermanentError,
    PipelineError,
    ProviderRejected,
    TransientError,
    code_retryable,
    error_for,
    is_retryable,
)
from pipeline.ledger import Failure

PACKAGE = Path(errors.__file__).parent

# Every code and whether a failure with it, recorded without its flag, is worth retrying.
EXPECTED = {
    FailureCode.MANIFEST_INVALID: False,
    FailureCode.DUPLICATE_ID: False,
    FailureCode.NOT_FOUND: False,
    FailureCode.NOT_MEDIA: False,
    FailureCode.NO_AUDIO_STREAM: False,
    FailureCode.EMPTY_AUDIO: False,
    FailureCode.CORRUPT: False,
    FailureCode.LOW_SAMPLE_RATE: False,
    FailureCode.TOO_LONG: False,
    FailureCode.TOO_LARGE: False,
    FailureCode.BAD_TRIM: False,
    FailureCode.BAD_CHANNEL: False,
    FailureCode.DOWNLOAD_FAILED: True,  # raised both ways; the stored flag tells them apart
    FailureCode.DOWNLOAD_TIMEOUT: True,
    FailureCode.MODEL_UNAVAILABLE: False,
    FailureCode.ENGINE_FAILED: False,
    FailureCode.CONFIG_INVALID: False,
    FailureCode.UNSUPPORTED_OPTION: False,
    FailureCode.PROVIDER_AUTH: False,
    FailureCode.PROVIDER_REJECTED: False,
    FailureCode.PROVIDER_FAILED: False,
    FailureCode.PROVIDER_THROTTLED: True,
    FailureCode.PROVIDER_ERROR: True,
    FailureCode.PROVIDER_TIMEOUT: True,
    FailureCode.PROVIDER_BAD_RESPONSE: True,
    FailureCode.TASK_LOST: True,
    FailureCode.POLL_TIMEOUT: True,
    FailureCode.RESULT_EXPIRED: True,
    FailureCode.BUDGET_EXCEEDED: False,
    FailureCode.STORAGE_UNAVAILABLE: True,
    FailureCode.STORAGE_ERROR: False,
    FailureCode.OUTPUT_REFUSED: False,
    FailureCode.LEASE_EXPIRED: True,
    FailureCode.INTERNAL: False,  # a crash: a bug, not a fault that passes
    FailureCode.ILLEGAL_TRANSITION: False,
    FailureCode.CANCELLED: False,
}


@pytest.mark.parametrize("code", list(FailureCode))
def test_each_codes_retryability(code: FailureCode) -> None:
    """Each code's retryability, written out: a change to the table must change this too."""
    assert code_retryable(code.value) is EXPECTED[code]


def test_unknown_codes_are_not_retryable() -> None:
    """A code this version does not know (a newer writer's) is not retried by guesswork."""
    assert code_retryable("some_future_code") is False


def _raised_codes() -> dict[tuple[type[PipelineError], FailureCode], list[str]]:
    """(exception class, code) for every ``SomeError(FailureCode.X, ...)`` in pipeline/,
    plus the classes whose code is fixed (``SourceMissing`` and the like)."""
    found: dict[tuple[type[PipelineError], FailureCode], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            cls = getattr(errors, name or "", None)
            if not (isinstance(cls, type) and issubclass(cls, PipelineError)):
                continue
            first = node.args[0] if node.args else None
            if (
                isinstance(first, ast.Attribute)
                and isinstance(first.value, ast.Name)
                and first.value.id == "FailureCode"
            ):
                code = FailureCode[first.attr]
                found.setdefault((cls, code), []).append(f"{path}:{node.lineno}")
    fixed = {
        errors.SourceMissing: FailureCode.NOT_FOUND,
        errors.SourceRefused: FailureCode.DOWNLOAD_FAILED,
        errors.BudgetExceeded: FailureCode.BUDGET_EXCEEDED,
        errors.TransitionRefused: FailureCode.ILLEGAL_TRANSITION,
    }
    for cls, code in fixed.items():
        found.setdefault((cls, code), []).append(f"{cls.__name__} (fixed code)")
    return found


def test_the_scan_sees_the_package() -> None:
    """The scan below finds the raises it is meant to check (it is not vacuous)."""
    raised = _raised_codes()
    assert (errors.ProviderBusy, FailureCode.PROVIDER_THROTTLED) in raised
    assert (TransientError, FailureCode.PROVIDER_ERROR) in raised
    assert (errors.MediaRejected, FailureCode.NOT_MEDIA) in raised
    assert len(raised) > 30


def test_every_code_raised_as_transient_is_classified_transient() -> None:
    """A code raised as a TransientError anywhere is in TRANSIENT_CODES (or raised both ways),
    and a code raised as a PermanentError is not in TRANSIENT_CODES: the table cannot drift
    from what is raised."""
    raised = _raised_codes()
    transient = {code for (cls, code) in raised if issubclass(cls, TransientError)}
    permanent = {code for (cls, code) in raised if issubclass(cls, PermanentError)}
    assert transient - TRANSIENT_CODES - RAISED_BOTH_WAYS == set()
    assert permanent & TRANSIENT_CODES == set(), {
        code: where for (cls, code), where in raised.items() if code in TRANSIENT_CODES
    }
    assert transient & permanent == RAISED_BOTH_WAYS


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
def test_codes_decided_without_an_exception_take_the_tables_branch(code: FailureCode) -> None:
    """A poll's verdict (task_lost, poll_timeout, ...) becomes an error of its code's branch."""
    assert isinstance(error_for(code, "m"), TransientError)


def test_a_provider_verdict_that_is_final_is_permanent() -> None:
    """provider_failed (a task FAILED on its own) fails the item."""
    err = error_for(FailureCode.PROVIDER_FAILED, "task FAILED")
    assert isinstance(err, ProviderRejected) and not is_retryable(err)


def test_result_expired_is_transient_where_it_is_raised() -> None:
    """The DashScope client raises an expired result URL as transient: transcribe again."""
    import httpx

    from pipeline.asr.dashscope.wire import to_error

    err = to_error(httpx.Response(403, content=b"<Code>AccessDenied</Code>"), source="result")
    assert err.code is FailureCode.RESULT_EXPIRED and is_retryable(err)


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (TransientError(FailureCode.DOWNLOAD_FAILED, "HTTP 503"), True),
        (errors.SourceRefused("http://169.254.169.254/: link-local"), False),
        (ValueError("boom"), False),
    ],
)
def test_the_failure_recorded_keeps_the_exceptions_branch(
    exc: BaseException, retryable: bool
) -> None:
    """Failure.of stores what the exception's class says, not what the code suggests."""
    failure = Failure.of(exc)
    assert failure.retryable is retryable
    if not isinstance(exc, PipelineError):
        assert failure.code == FailureCode.INTERNAL.value
