"""The Starlette app: routes, the gate (request id, auth, body caps, injected faults), the ticker.

:func:`create_app` is the only constructor; it takes the settings, optionally an engine (tests
share one loaded model), a clock (tests jump ahead 24 h) and a transcript cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.asr.base import ClipEngine
from pipeline.emulator import admin, routes_sync, routes_tasks, routes_uploads
from pipeline.emulator.access import Route, authorized, body_cap, route_of
from pipeline.emulator.backend import Backend, TranscriptCache
from pipeline.emulator.config import EmulatorConfig
from pipeline.emulator.errors import ApiError, internal, invalid_key, throttled, too_large
from pipeline.emulator.faults import RequestFault
from pipeline.emulator.state import Emulator
from pipeline.emulator.uploads import UploadStore
from pipeline.emulator.web import Json, compat_error, native_error, request_id
from pipeline.settings import DownloadSettings

TICK_S = 0.05


def api_dialect(path: str) -> str | None:
    """``native`` and ``compat`` routes are the API (faults); the rest are not."""
    route = route_of(path)
    return route.value if route in (Route.NATIVE, Route.COMPAT) else None


def gate_error(em: Emulator, scope: Scope) -> ApiError | None:
    """Auth, then the declared body size, then (API routes only) the injected fault; all
    before the handler has done anything."""
    route = route_of(scope["path"])
    headers = dict(scope["headers"])
    auth = headers.get(b"authorization")
    if not authorized(
        em.config,
        route,
        auth.decode("latin-1") if auth is not None else None,
        em.secret,
        scope["path"],
        scope.get("query_string", b"").decode("latin-1"),
    ):
        return invalid_key()
    try:
        declared = int(headers.get(b"content-length", b"0"))
    except ValueError:
        declared = 0
    cap = body_cap(route, em.config)
    if declared > cap:
        return too_large(cap)
    if route not in (Route.NATIVE, Route.COMPAT):
        return None
    fault = em.next_request_fault()
    if fault is RequestFault.THROTTLE:
        return throttled()
    if fault is RequestFault.ERROR:
        return internal()
    return None


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a request body passes its route's cap."""


class ApiGate:
    """Pure ASGI middleware: a request id for every request; auth and a body cap for every
    route (:mod:`pipeline.emulator.access`); injected faults for API ones.

    Injected 429/500 answers leave no trace (no task is created), so clients may retry them.
    The body is counted as it arrives, whatever Content-Length said (or if it said nothing):
    past the cap the handler's read fails and the answer is 413.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid
        em: Emulator = scope["app"].state.emulator
        render = compat_error if route_of(scope["path"]) is Route.COMPAT else native_error
        err = gate_error(em, scope)
        if err is not None:
            await render(err, rid)(scope, receive, send)
            return
        cap = body_cap(route_of(scope["path"]), em.config)
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await render(too_large(cap), rid)(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    err = ApiError(
        status,
        "NotFound" if status == 404 else "InvalidParameter",
        f"{request.method} {request.url.path} is not served here.",
    )
    if api_dialect(request.url.path) == "compat":
        return compat_error(err, request_id(request))
    return native_error(err, request_id(request))


async def _crashed(request: Request, exc: Exception) -> Response:
    return Json(internal().native_body(request_id(request)), status_code=500)


def create_app(
    config: EmulatorConfig,
    engine: ClipEngine | None = None,
    *,
    clock: Callable[[], float] = time.time,
    cache: TranscriptCache | None = None,
) -> Starlette:
    """A DashScope-compatible ASGI app; the model loads on the first transcription."""
    if engine is None:
        from pipeline.asr.local import LocalEngine
        from pipeline.settings import LocalEngineSettings

        # Greedy decoding: the emulator stands in for a cloud service, its latency is what
        # tests and benchmarks lean on, not its word error rate.
        engine = LocalEngine(
            config.model, LocalEngineSettings(beam_size=1), concurrency=2 * config.workers
        )
    upload_dir = Path(tempfile.mkdtemp(prefix="bulkscribe-emulator-uploads-"))
    uploads = UploadStore(upload_dir, config.upload_ttl_s)
    backend = Backend(
        engine,
        workers=config.workers,
        cache=cache,
        resolve_oss=lambda key: uploads.path(key, clock()),
        download=DownloadSettings(
            deadline_s=config.download_deadline_s, allow_private=config.allow_private
        ),
    )
    em = Emulator(config, backend, uploads, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async def ticker() -> None:
            while True:
                await asyncio.sleep(TICK_S)
                em.housekeeping()

        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()
            await em.close()
            shutil.rmtree(upload_dir, ignore_errors=True)

    app = Starlette(
        routes=[*routes_tasks.routes, *routes_sync.routes, *routes_uploads.routes, *admin.routes],
        exception_handlers={HTTPException: _not_found, Exception: _crashed},
        lifespan=lifespan,
    )
    app.state.emulator = em
    app.add_middleware(ApiGate)
    return app
