"""Every failure the client can meet lands on the right branch of the exception tree."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from ds_fakes import REQUEST_ID, TASK_ID, error

from pipeline.asr.dashscope.wire import retry_after_s, status_for_code, to_error
from pipeline.errors import (
    ConfigError,
    FailureCode,
    ProviderBusy,
    ProviderRejected,
    ProviderUnavailable,
)


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (
            error(429, "Throttling.RateQuota", "Requests rate limit exceeded"),
            ProviderBusy,
            FailureCode.PROVIDER_THROTTLED,
        ),
        (
            error(400, "Throttling.AllocationQuota", "Allocated quota exceeded"),
            ProviderBusy,
            FailureCode.PROVIDER_THROTTLED,
        ),
        (
            error(500, "InternalError", "An internal error has occured"),
            ProviderUnavailable,
            FailureCode.PROVIDER_ERROR,
        ),
        (error(503, "ServiceUnavailable", "busy"), ProviderUnavailable, FailureCode.PROVIDER_ERROR),
        (
            error(408, "RequestTimeOut", "Request timed out"),
            ProviderUnavailable,
            FailureCode.PROVIDER_TIMEOUT,
        ),
        (
            error(504, "GatewayTimeout", "upstream"),
            ProviderUnavailable,
            FailureCode.PROVIDER_TIMEOUT,
        ),
        (
            error(401, "InvalidApiKey", "Invalid API-key provided."),
            ConfigError,
            FailureCode.PROVIDER_AUTH,
        ),
        (
            error(403, "AccessDenied.Unpurchased", "Access to model denied."),
            ConfigError,
            FailureCode.PROVIDER_AUTH,
        ),
        (
            error(
                400,
                "Arrearage",
                "Access denied, plesase make sure your account is in good standing.",
            ),
            ConfigError,
            FailureCode.PROVIDER_AUTH,
        ),
        (
            error(400, "InvalidParameter", "Model not exist."),
            ProviderRejected,
            FailureCode.PROVIDER_REJECTED,
        ),
        (
            error(413, "BadRequest.TooLarge", "Payload Too Large"),
            ProviderRejected,
            FailureCode.TOO_LARGE,
        ),
    ],
    ids=[
        "429",
        "throttling-code",
        "500",
        "503",
        "408",
        "504",
        "401",
        "403",
        "arrearage",
        "400",
        "413",
    ],
)
def test_status_and_code_mapping(script, client, response, kind, code) -> None:
    """Each HTTP status / provider code maps to one exception class and failure code."""
    script.add(response)
    with pytest.raises(kind) as err:
        client.query_task(TASK_ID)
    assert err.value.code is code
    assert err.value.detail["request_id"] == REQUEST_ID
    assert err.value.detail["http_status"] == response.status_code


def test_400_keeps_provider_code_message_and_request_id(script, client) -> None:
    """A 400 InvalidParameter is a permanent rejection that keeps what the provider said."""
    script.add(error(400, "InvalidParameter", "Model not exist."))
    with pytest.raises(ProviderRejected) as err:
        client.submit_transcription("fun-asr-nope", ["https://a.example/a.wav"], {})
    assert err.value.retryable is False
    assert err.value.detail == {
        "http_status": 400,
        "provider_code": "InvalidParameter",
        "provider_message": "Model not exist.",
        "request_id": REQUEST_ID,
    }
    assert "Model not exist." in err.value.message


def test_429_honours_retry_after(script, client) -> None:
    """A 429 with Retry-After: 7 is ProviderBusy with retry_after_s 7."""
    script.add(error(429, "Throttling", "Requests throttling triggered.", **{"Retry-After": "7"}))
    with pytest.raises(ProviderBusy) as err:
        client.query_task(TASK_ID)
    assert err.value.retry_after_s == 7.0
    assert err.value.retryable is True
    assert err.value.detail["provider_code"] == "Throttling"


def test_429_prefers_retry_after_ms(script, client) -> None:
    """``retry-after-ms`` (the 2.0 SDK's header) wins over Retry-After."""
    script.add(
        error(429, "Throttling", "slow down", **{"retry-after-ms": "1500", "Retry-After": "9"})
    )
    with pytest.raises(ProviderBusy) as err:
        client.query_task(TASK_ID)
    assert err.value.retry_after_s == 1.5


def test_429_without_header_has_no_retry_after(script, client) -> None:
    """No header, no hint: the pipeline's own backoff applies."""
    script.add(error(429, "Throttling", "slow down"))
    with pytest.raises(ProviderBusy) as err:
        client.query_task(TASK_ID)
    assert err.value.retry_after_s is None


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP date counts from now; garbage gives None."""
    now = datetime(2025, 9, 25, 1, 0, 0, tzinfo=UTC)
    assert retry_after_s({"retry-after": "Thu, 25 Sep 2025 01:00:30 GMT"}, now) == 30.0
    assert retry_after_s({"retry-after": "soon"}, now) is None


def test_openai_style_error_body(script, client) -> None:
    """Compatible-mode errors (``{"error": {...}}``) keep their code and message."""
    script.add(
        httpx.Response(
            404,
            json={
                "request_id": REQUEST_ID,
                "error": {
                    "message": "The model `x` does not exist.",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                },
            },
        )
    )
    with pytest.raises(ProviderRejected) as err:
        client.chat_transcribe("x", "data:audio/wav;base64,AAAA")
    assert err.value.detail["provider_code"] == "model_not_found"
    assert err.value.detail["provider_message"] == "The model `x` does not exist."


def test_html_502_is_provider_error_with_snippet(script, client) -> None:
    """A proxy's HTML 502 is transient and its text is kept for the operator."""
    script.add(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(ProviderUnavailable) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_ERROR
    assert "Bad Gateway" in err.value.message


def test_read_timeout_is_provider_timeout(script, client) -> None:
    """A slow answer (httpx.ReadTimeout) is ProviderUnavailable / provider_timeout."""
    script.add(httpx.ReadTimeout("timed out"))
    with pytest.raises(ProviderUnavailable) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_TIMEOUT
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_connect_timeout_is_provider_timeout(script, client) -> None:
    """A connect timeout is a timeout too."""
    script.add(httpx.ConnectTimeout("connect timed out"))
    with pytest.raises(ProviderUnavailable) as err:
        client.submit_transcription("fun-asr", ["https://a.example/a.wav"], {})
    assert err.value.code is FailureCode.PROVIDER_TIMEOUT


def test_connection_refused_is_provider_error(script, client) -> None:
    """A refused connection is ProviderUnavailable / provider_error."""
    script.add(httpx.ConnectError("connection refused"))
    with pytest.raises(ProviderUnavailable) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_ERROR


def test_upload_policy_expired_is_transient() -> None:
    """OSS's 'Policy expired' 403 on upload is retryable: a fresh policy fixes it."""
    response = httpx.Response(
        403,
        content=b"<Error><Code>AccessDenied</Code><Message>Invalid "
        b"according to Policy: Policy expired.</Message></Error>",
    )
    err = to_error(response, source="upload")
    assert isinstance(err, ProviderUnavailable)
    assert err.detail["provider_code"] == "AccessDenied"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling.RateQuota", 429),
        ("InvalidApiKey", 401),
        ("AccessDenied", 403),
        ("InternalError.Algo", 500),
        ("InternalError.Algo.InvalidParameter", 400),
        ("InvalidParameter", 400),
        (None, 400),
    ],
)
def test_status_for_in_band_codes(code, status) -> None:
    """An SSE error without a status line gets a status guessed from its code."""
    assert status_for_code(code) == status
