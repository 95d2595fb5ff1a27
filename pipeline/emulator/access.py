"""Who may use which route, and how big a request body may be: pure decisions for the gate.

With ``--api-key`` every route needs the key as a Bearer header, with two credentials that
stand in for it, as on the real service: a result URL handed out by a task query carries an
OSS-style signature (``Expires``, ``OSSAccessKeyId``, ``Signature``; HMAC-SHA1 with the
emulator's per-process secret), because clients fetch result files without headers (the
DashScope SDK's users and bulkscribe's own client do); and an upload form carries the
policy signed by getPolicy, itself only answered to a key holder. Without ``--api-key``
nothing is checked: the emulator is then a test double for a trusted network.

Every route caps its request body (:func:`body_cap`); the gate counts bytes as they arrive,
so a chunked body with no Content-Length is cut off the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from enum import StrEnum
from urllib.parse import parse_qs, quote

from pipeline.emulator.config import EmulatorConfig
from pipeline.emulator.uploads import ACCESS_KEY_ID, UPLOAD_PATH

SMALL_BODY = 64 * 1024  # admin routes, result files, anything not expecting a body
_SLACK = 1024 * 1024  # JSON or multipart framing around the largest allowed payload


class Route(StrEnum):
    NATIVE = "native"  # /api/v1/...: the DashScope API
    COMPAT = "compat"  # /compatible-mode/...: the OpenAI-compatible API
    RESULT = "result"  # /results/...: result files, fetched without headers
    UPLOAD = "upload"  # the OSS PostObject endpoint: the signed policy is the credential
    OTHER = "other"  # /_emulator/* and anything else


def route_of(path: str) -> Route:
    if path == "/api/v1" or path.startswith("/api/v1/"):
        return Route.NATIVE
    if path.startswith("/compatible-mode/"):
        return Route.COMPAT
    if path.startswith("/results/"):
        return Route.RESULT
    if path == UPLOAD_PATH:
        return Route.UPLOAD
    return Route.OTHER


def body_cap(route: Route, config: EmulatorConfig) -> int:
    """The largest request body a route accepts (bytes): what the service itself would take
    (a 10 MB data URI for sync calls, a 100 MB upload), plus framing; 64 KiB elsewhere."""
    if route is Route.UPLOAD:
        return config.upload_max_bytes + _SLACK
    if route in (Route.NATIVE, Route.COMPAT):
        return config.sync_max_bytes + _SLACK
    return SMALL_BODY


def result_signature(secret: bytes, task_id: str, index: int, expires: int) -> str:
    message = f"GET\n/results/{task_id}/{index}.json\n{expires}".encode()
    return base64.b64encode(hmac.new(secret, message, hashlib.sha1).digest()).decode()


def signed_result_query(secret: bytes, task_id: str, index: int, expires: int) -> str:
    """The query string of a result URL, shaped like a presigned OSS URL."""
    sig = quote(result_signature(secret, task_id, index, expires), safe="")
    return f"Expires={expires}&OSSAccessKeyId={ACCESS_KEY_ID}&Signature={sig}"


def result_signed(secret: bytes, path: str, query: str) -> bool:
    """True when ``path?query`` is a result URL this emulator signed (expiry is the route's
    business: an expired but genuine URL answers 403 as on OSS)."""
    parts = path.removeprefix("/results/").removesuffix(".json").split("/")
    params = parse_qs(query)
    try:
        task_id, index = parts[0], int(parts[1])
        expires = int(params["Expires"][0])
        given = params["Signature"][0]
    except (IndexError, KeyError, ValueError):
        return False
    if len(parts) != 2:
        return False
    return hmac.compare_digest(given, result_signature(secret, task_id, index, expires))


def authorized(
    config: EmulatorConfig,
    route: Route,
    authorization: str | None,
    secret: bytes,
    path: str,
    query: str,
) -> bool:
    """May this request go on? Always, without an API key configured."""
    key = config.api_key
    if key is None:
        return True
    if authorization is not None and hmac.compare_digest(
        authorization.encode(), f"Bearer {key}".encode()
    ):
        return True
    if route is Route.RESULT:
        return result_signed(secret, path, query)
    return route is Route.UPLOAD  # checked by the handler against the signed policy
