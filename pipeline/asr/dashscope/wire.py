"""The edge where DashScope's answers become bulkscribe's exceptions.

:func:`to_error` is the one mapping from an HTTP response or an httpx exception to the
exception tree (``pipeline.errors``); every request the client makes goes through it, so the
retry-or-fail decision for a provider failure is made here and nowhere else:

=====================================================  ==========================================
what came back                                         raised as (``code``)
=====================================================  ==========================================
429, or a provider code ``Throttling*``                ProviderBusy (provider_throttled), with
                                                       ``retry_after_s`` from ``retry-after-ms``
                                                       or ``Retry-After``
401 / 403, ``InvalidApiKey``, ``AccessDenied*``,        ConfigError (provider_auth): every item
``Arrearage``                                          would fail the same way
408, 504, httpx timeouts                               ProviderUnavailable (provider_timeout)
other 5xx, connection errors                           ProviderUnavailable (provider_error)
413                                                    ProviderRejected (too_large)
other 4xx                                              ProviderRejected (provider_rejected)
2xx with malformed JSON or missing required fields     ProviderUnavailable (provider_bad_response)
=====================================================  ==========================================

A garbled 200 is treated as transient on purpose: in practice it is a proxy or load balancer
answering for the service (an HTML error page, a cut-off body), and the same request usually
succeeds a moment later. If it keeps happening, retries run out and the item goes DEAD with
a code that says exactly what was seen.

Two URL kinds are not DashScope's API but signed OSS URLs, where a 403 means something else:
``source="result"`` (``transcription_url``, valid 24 h: 403/404/410 → result_expired, transient:
the file is transcribed again) and
``source="upload"`` (PostObject: "Policy expired" → transient, a fresh policy fixes it).

The provider's ``code``, ``message`` and ``request_id`` (and the HTTP status) are kept in
``PipelineError.detail`` under ``provider_code``, ``provider_message``, ``request_id`` and
``http_status``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from pipeline.errors import (
    ConfigError,
    FailureCode,
    PipelineError,
    ProviderBusy,
    ProviderRejected,
    ProviderUnavailable,
)

Source = Literal["api", "result", "upload"]

# connect 10 s, read 60 s: a sync request for a 3-minute clip answers well within a minute.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

_AUTH_CODES = ("InvalidApiKey", "invalid_api_key", "AccessDenied", "Arrearage")
_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>(.*?)</\1>", re.S)


def new_http_client(
    *, transport: httpx.BaseTransport | None = None, timeout: httpx.Timeout = DEFAULT_TIMEOUT
) -> httpx.Client:
    """An httpx client with the default timeouts; callers may build their own instead."""
    return httpx.Client(transport=transport, timeout=timeout)


def to_error(failure: httpx.Response | httpx.HTTPError, *, source: Source = "api") -> PipelineError:
    """The exception to raise for a non-2xx response or an httpx exception."""
    if isinstance(failure, httpx.HTTPStatusError):
        failure = failure.response
    if isinstance(failure, httpx.TimeoutException):
        return ProviderUnavailable(
            FailureCode.PROVIDER_TIMEOUT,
            f"DashScope did not answer in time ({type(failure).__name__})",
        )
    if isinstance(failure, httpx.DecodingError):
        return bad_response(f"undecodable response body: {failure}")
    if isinstance(failure, httpx.HTTPError):  # connect/read/protocol errors and the rest
        return ProviderUnavailable(
            FailureCode.PROVIDER_ERROR,
            f"DashScope unreachable: {type(failure).__name__}: {failure}",
        )

    status = failure.status_code
    code, message, request_id = _provider_fields(failure)
    detail = {
        k: v
        for k, v in (
            ("http_status", status),
            ("provider_code", code),
            ("provider_message", message),
            ("request_id", request_id),
        )
        if v
    }
    label = " ".join(str(p) for p in (status, code) if p)
    text = f"DashScope HTTP {label}: {message or failure.reason_phrase}"
    msg_lower = (message or "").lower()

    if source == "result" and status in (403, 404, 410):
        # Transient: the result is gone, but transcribing the file again will make a new one.
        return ProviderUnavailable(
            FailureCode.RESULT_EXPIRED,
            f"result URL no longer readable (valid 24 h): {text}",
            detail=detail,
        )
    if source == "upload" and status == 403 and "expired" in msg_lower:
        return ProviderUnavailable(FailureCode.PROVIDER_ERROR, text, detail=detail)
    if status == 429 or (code or "").startswith("Throttling"):
        return ProviderBusy(
            FailureCode.PROVIDER_THROTTLED,
            text,
            detail=detail,
            retry_after_s=retry_after_s(failure.headers),
        )
    if status in (401, 403) or (code or "").startswith(_AUTH_CODES):
        return ConfigError(FailureCode.PROVIDER_AUTH, text, detail=detail)
    if status in (408, 504):
        return ProviderUnavailable(FailureCode.PROVIDER_TIMEOUT, text, detail=detail)
    if status >= 500:
        return ProviderUnavailable(FailureCode.PROVIDER_ERROR, text, detail=detail)
    if status == 413:
        return ProviderRejected(FailureCode.TOO_LARGE, text, detail=detail)
    if status >= 400:
        return ProviderRejected(FailureCode.PROVIDER_REJECTED, text, detail=detail)
    return bad_response(f"unexpected HTTP status: {text}", detail=detail)


def status_for_code(code: str | None) -> int:
    """An HTTP status for an in-band (SSE) error that did not state one."""
    code = code or ""
    if code.startswith("Throttling") or code == "limit_requests":
        return 429
    if code in ("InvalidApiKey", "invalid_api_key"):
        return 401
    if code.startswith("AccessDenied"):
        return 403
    if code == "RequestTimeOut":
        return 408
    if code.startswith("InternalError") and "InvalidParameter" not in code:
        return 500
    return 400  # what the 1.x SDK assumes for an error event without a status line


def in_band_error(body: Mapping[str, Any], status: int | None) -> PipelineError:
    """An error reported inside a 200 stream, mapped as if it had been a plain response."""
    err = body.get("error")
    code = err.get("code") if isinstance(err, Mapping) else body.get("code")
    status = status if status and status >= 400 else status_for_code(_str(code))
    return to_error(httpx.Response(status, json=dict(body)))


def bad_response(
    message: str, *, detail: Mapping[str, Any] | None = None, request_id: str | None = None
) -> ProviderUnavailable:
    """A 2xx answer we cannot use (see the module docstring for why it is transient)."""
    detail = dict(detail or {})
    if request_id:
        detail["request_id"] = request_id
    return ProviderUnavailable(
        FailureCode.PROVIDER_BAD_RESPONSE,
        f"DashScope sent a malformed response: {message}",
        detail=detail,
    )


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body of a 2xx response as a JSON object, or a provider_bad_response error."""
    try:
        body = json.loads(response.content)
    except ValueError:
        snippet = response.content[:120].decode("utf-8", "replace")
        raise bad_response(f"not JSON (HTTP {response.status_code}): {snippet!r}") from None
    if not isinstance(body, dict):
        raise bad_response(f"expected a JSON object, got {type(body).__name__}")
    return body


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _provider_fields(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from a native, OpenAI-style, SSE or OSS (XML) error body."""
    try:
        text = response.content.decode("utf-8", "replace")
    except httpx.ResponseNotRead:
        return None, None, None
    body = _json_or_none(text)
    if body is None:  # a streaming call refused with an error event as the whole body
        data = [ln[5:] for ln in text.splitlines() if ln.startswith("data:")]
        body = _json_or_none(data[-1]) if data else None
    if not isinstance(body, dict):
        fields = dict(_XML_FIELD.findall(text))
        if fields:
            return fields.get("Code"), fields.get("Message"), fields.get("RequestId")
        return None, text[:200].strip() or None, None
    request_id = _str(body.get("request_id"))
    err = body.get("error")
    if isinstance(err, dict):  # OpenAI-compatible: {"error": {"code", "message", "type"}}
        return _str(err.get("code") or err.get("type")), _str(err.get("message")), request_id
    return _str(body.get("code")), _str(body.get("message") or body.get("msg")), request_id


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
