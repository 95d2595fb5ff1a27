"""Small helpers every route shares: the emulator behind a request, its id, JSON in and out."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.emulator.errors import ApiError, invalid
from pipeline.emulator.state import Emulator


class Json(JSONResponse):
    """Compact, UTF-8 JSON with the ``application/json`` type the SDK checks for (§2.5)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def emulator(request: Request) -> Emulator:
    return request.app.state.emulator  # type: ignore[no-any-return]


def request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    """Where clients reach this emulator: ``--public-url``, else the URL they used."""
    return emulator(request).config.public_url or str(request.base_url).rstrip("/")


def header_enabled(request: Request, name: str) -> bool:
    """DashScope's switch headers (X-DashScope-Async, -SSE, -OssResourceResolve) say "enable"."""
    return request.headers.get(name, "").strip().lower() == "enable"


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.") from None


def native_error(err: ApiError, rid: str) -> Response:
    return Json(err.native_body(rid), status_code=err.status)


def compat_error(err: ApiError, rid: str) -> Response:
    return Json(err.compat_body(rid), status_code=err.status)
