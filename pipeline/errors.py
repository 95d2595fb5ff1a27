"""Errors raised by bulkscribe.

Every failure the pipeline knows about carries a stable :class:`FailureCode`. The code is
kept with the item in the ledger and in ``results.jsonl``; released values never change.
Whether an error is worth retrying is decided by its branch of the tree and nowhere else::

    PipelineError                 .code: FailureCode, kept with the item
    ├── PermanentError            fail the item now; retrying cannot help
    │   ├── ManifestError         a manifest line that cannot become an item
    │   ├── MediaRejected         probe/normalize found the file unusable
    │   ├── SourceMissing         the file or URL is not there
    │   ├── SourceRefused         the download policy refuses the URL (address, redirect)
    │   ├── ProviderRejected      the provider refused the request or the file (4xx, FAILED)
    │   ├── ConfigError           settings that cannot work (unknown model, missing key)
    │   └── BudgetExceeded        not admitted: a budget cap was reached (item SKIPPED)
    └── TransientError            back off and retry; DEAD (FAILED when embedded) at the end
        ├── SourceUnavailable     download timed out / connection failed / 5xx
        ├── ProviderBusy          429, throttling
        ├── ProviderUnavailable   5xx, timeouts, connection errors, an expired result URL
        └── StorageUnavailable    object store unreachable

The branch an error is raised as is stored with its code (``error_retryable``), and re-runs
read that flag back; :data:`TRANSIENT_CODES` says which branch each code is raised as, and a
test checks it against every ``raise`` in the package.

Anything else that escapes a stage is a bug; the runner records it as ``internal``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class FailureCode(StrEnum):
    """Stable, documented reasons an item did not succeed."""

    # manifest
    MANIFEST_INVALID = "manifest_invalid"
    DUPLICATE_ID = "duplicate_id"
    # source and media
    NOT_FOUND = "not_found"
    NOT_MEDIA = "not_media"
    NO_AUDIO_STREAM = "no_audio_stream"
    EMPTY_AUDIO = "empty_audio"
    CORRUPT = "corrupt"
    LOW_SAMPLE_RATE = "low_sample_rate"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    BAD_TRIM = "bad_trim"
    BAD_CHANNEL = "bad_channel"
    DOWNLOAD_FAILED = "download_failed"
    DOWNLOAD_TIMEOUT = "download_timeout"
    # engines and providers
    MODEL_UNAVAILABLE = "model_unavailable"
    ENGINE_FAILED = "engine_failed"
    CONFIG_INVALID = "config_invalid"
    UNSUPPORTED_OPTION = "unsupported_option"
    PROVIDER_AUTH = "provider_auth"
    PROVIDER_REJECTED = "provider_rejected"
    PROVIDER_FAILED = "provider_failed"
    PROVIDER_THROTTLED = "provider_throttled"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_BAD_RESPONSE = "provider_bad_response"
    TASK_LOST = "task_lost"
    POLL_TIMEOUT = "poll_timeout"
    RESULT_EXPIRED = "result_expired"
    # budgets
    BUDGET_EXCEEDED = "budget_exceeded"
    # infrastructure
    STORAGE_UNAVAILABLE = "storage_unavailable"
    STORAGE_ERROR = "storage_error"
    OUTPUT_REFUSED = "output_refused"  # an output path under --out is a link or not a file
    LEASE_EXPIRED = "lease_expired"
    INTERNAL = "internal"
    ILLEGAL_TRANSITION = "illegal_transition"  # a bug: a move the state table forbids
    CANCELLED = "cancelled"  # an operator cancelled the batch


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""

    retryable = False

    def __init__(
        self, code: FailureCode, message: str, *, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = FailureCode(code)
        self.message = message
        # Provider code/message/request_id and similar facts worth keeping in the ledger.
        self.detail = dict(detail or {})

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PermanentError(PipelineError):
    """Retrying cannot help: the item fails now."""


class TransientError(PipelineError):
    """May succeed later: back off and try again."""

    retryable = True

    def __init__(
        self,
        code: FailureCode,
        message: str,
        *,
        detail: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(code, message, detail=detail)
        self.retry_after_s = retry_after_s


class ManifestError(PermanentError):
    """A manifest line that cannot become an item."""


class MediaRejected(PermanentError):
    """The file is not usable audio (or not within the model's limits)."""


class SourceMissing(PermanentError):
    """The source does not exist (missing path, HTTP 404)."""

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(FailureCode.NOT_FOUND, message, detail=detail)


class OutputRefused(PermanentError, ValueError):
    """An item's output path under --out is not ours to write: a symlink or something else
    planted where a file or directory goes (a shared --out). Nothing is written through it."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureCode.OUTPUT_REFUSED, message)


class SourceRefused(PermanentError):
    """The download policy refuses the source: an address it may not reach (link-local,
    cloud metadata, private when not allowed), a redirect loop, too many redirects, or a
    redirect to a scheme other than http(s). Retrying would be refused the same way."""

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(FailureCode.DOWNLOAD_FAILED, message, detail=detail)


class ConfigError(PermanentError):
    """Settings that cannot work; usually every item fails the same way."""


class BudgetExceeded(PermanentError):
    """Admitting the item would pass a budget cap (max_audio_hours, max_cost): the item is
    SKIPPED, not FAILED, and a higher cap admits it later."""

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(FailureCode.BUDGET_EXCEEDED, message, detail=detail)


class ProviderRejected(PermanentError):
    """The ASR provider refused the request or reported the file as failed."""


class SourceUnavailable(TransientError):
    """A remote source could not be read right now."""


class ProviderBusy(TransientError):
    """The provider throttled us (HTTP 429 / Throttling.*)."""


class ProviderUnavailable(TransientError):
    """The provider answered 5xx, timed out or could not be reached."""


class StorageUnavailable(TransientError):
    """The object store could not be reached."""


def failure_of(exc: BaseException) -> tuple[FailureCode, str]:
    """The (code, message) to record for any exception; unknown ones are ``internal``."""
    if isinstance(exc, PipelineError):
        return exc.code, exc.message
    return FailureCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def is_retryable(exc: BaseException) -> bool:
    """The one place that decides retry-or-fail."""
    return isinstance(exc, TransientError)


class TransitionRefused(PermanentError):
    """A state change the transition table (``states.ALLOWED``) does not allow: a bug in
    the caller, refused before any SQL runs."""

    def __init__(self, message: str) -> None:
        super().__init__(FailureCode.ILLEGAL_TRANSITION, message)


# The codes raised as a TransientError, and only so (tests/unit/test_errors.py scans every
# ``SomeError(FailureCode.X, ...)`` in pipeline/ and checks this table against it). Every
# other code is raised as a PermanentError, except those in RAISED_BOTH_WAYS.
TRANSIENT_CODES = frozenset(
    {
        FailureCode.DOWNLOAD_TIMEOUT,
        FailureCode.PROVIDER_THROTTLED,
        FailureCode.PROVIDER_ERROR,
        FailureCode.PROVIDER_TIMEOUT,
        FailureCode.PROVIDER_BAD_RESPONSE,
        FailureCode.TASK_LOST,  # the provider no longer knows the task: submit again
        FailureCode.POLL_TIMEOUT,  # a task stuck or unreachable for too long: submit again
        FailureCode.RESULT_EXPIRED,  # the 24 h result URL lapsed: transcribe again
        FailureCode.STORAGE_UNAVAILABLE,
        FailureCode.LEASE_EXPIRED,
    }
)

# download_failed: a 5xx, 429 or a dropped connection is transient; another 4xx or an
# address the download policy refuses is permanent. The stored flag tells them apart.
RAISED_BOTH_WAYS = frozenset({FailureCode.DOWNLOAD_FAILED})


def code_retryable(code: str) -> bool:
    """Whether a failure with ``code`` is worth another try, from the code alone: for
    failures recorded before the ledger kept the flag. A code raised both ways counts as
    transient (as it did then); ``internal`` (a crash) and unknown codes do not."""
    return code in TRANSIENT_CODES or code in RAISED_BOTH_WAYS


def error_for(
    code: FailureCode, message: str, *, detail: dict[str, Any] | None = None
) -> PipelineError:
    """An error for a code decided without an exception (a poll's verdict): its branch
    is the code's, from :data:`TRANSIENT_CODES`."""
    if code in TRANSIENT_CODES:
        return TransientError(code, message, detail=detail)
    return ProviderRejected(code, message, detail=detail)
