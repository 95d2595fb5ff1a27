"""The Starlette app: routes, the API gate (request id, auth, injected faults), the ticker.

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
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.asr.base import ClipEngine
from pipeline.emulator import admin, routes_sync, routes_tasks, routes_uploads
from pipeline.emulator.backend import Backend, TranscriptCache
from pipeline.emulator.config import EmulatorConfig
from pipeline.emulator.errors import ApiError, internal, invalid_key, throttled
from pipeline.emulator.faults import RequestFault
from pipeline.emulator.state import Emulator
from pipeline.emulator.uploads import UploadStore
from pipeline.emulator.web import Json, compat_error, native_error, request_id

TICK_S = 0.05


def api_dialect(path: str) -> str | None:
    """``native`` and ``compat`` routes are the API (auth, faults); the rest are not."""
    if path == "/api/v1" or path.startswith("/api/v1/"):
        return "native"
    if path.startswith("/compatible-mode/"):
        return "compat"
    return None


def gate_error(em: Emulator, authorization: str | None) -> ApiError | None:
    """Auth first, then the injected fault; both before the handler has done anything."""
    key = em.config.api_key
    if key is not None and authorization != f"Bearer {key}":
        return invalid_key()
    fault = em.next_request_fault()
    if fault is RequestFault.THROTTLE:
        return throttled()
    if fault is RequestFault.ERROR:
        return internal()
    return None


class ApiGate:
    """Pure ASGI middleware: a request id for every request, auth and faults for API ones.

    Injected 429/500 answers leave no trace (no task is created), so clients may retry them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid
        dialect = api_dialect(scope["path"])
        if dialect is not None:
            em: Emulator = scope["app"].state.emulator
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            err = gate_error(em, auth.decode("latin-1") if auth is not None else None)
            if err is not None:
                render = native_error if dialect == "native" else compat_error
                await render(err, rid)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    err = ApiError(status, "NotFound" if status == 404 else "InvalidParameter",
                   f"{request.method} {request.url.path} is not served here.")
    if api_dialect(request.url.path) == "compat":
        return compat_error(err, request_id(request))
    return native_error(err, request_id(request))


async def _crashed(request: Request, exc: Exception) -> Response:
    return Json(internal().native_body(request_id(request)), status_code=500)


def create_app(config: EmulatorConfig, engine: ClipEngine | None = None, *,
               clock: Callable[[], float] = time.time,
               cache: TranscriptCache | None = None) -> Starlette:
    """A DashScope-compatible ASGI app; the model loads on the first transcription."""
    if engine is None:
        from pipeline.asr.local import LocalEngine
        from pipeline.settings import LocalEngineSettings

        # Greedy decoding: the emulator stands in for a cloud service, its latency is what
        # tests and benchmarks lean on, not its word error rate.
        engine = LocalEngine(config.model, LocalEngineSettings(beam_size=1),
                             concurrency=2 * config.workers)
    upload_dir = Path(tempfile.mkdtemp(prefix="bulkscribe-emulator-uploads-"))
    uploads = UploadStore(upload_dir, config.upload_ttl_s)
    backend = Backend(engine, workers=config.workers, cache=cache,
                      resolve_oss=lambda key: uploads.path(key, clock()))
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
        routes=[*routes_tasks.routes, *routes_sync.routes, *routes_uploads.routes,
                *admin.routes],
        exception_handlers={HTTPException: _not_found, Exception: _crashed},
        lifespan=lifespan,
    )
    app.state.emulator = em
    app.add_middleware(ApiGate)
    return app
