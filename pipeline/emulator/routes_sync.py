"""Sync recognition: native multimodal-generation (E4) and compatible-mode chat (E5).

The audio is transcribed in the sync thread pool before the first byte is sent, so every
failure is a clean error answer; streams are then cut from the finished text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pipeline.emulator.backend import AudioFailure, AudioRequest, Problem
from pipeline.emulator.errors import INTERNAL_MESSAGE, ApiError, invalid
from pipeline.emulator.parse import SyncRequest, parse_chat, parse_multimodal
from pipeline.emulator.replies import (
    Recognized,
    completion_body,
    completion_chunks,
    native_body,
    native_error_event,
    native_events,
)
from pipeline.emulator.state import Emulator
from pipeline.emulator.web import (
    Json,
    compat_error,
    emulator,
    header_enabled,
    native_error,
    read_json,
    request_id,
)
from pipeline.models import MediaLimits

SSE_TYPE = "text/event-stream;charset=UTF-8"
OSS_RESOLVE = "x-dashscope-ossresourceresolve"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

# Sync models reject bad audio outright; the messages are the emulator's own [INF].
SYNC_ERRORS: dict[Problem, ApiError] = {
    Problem.DOWNLOAD: invalid("The audio file cannot be downloaded."),
    Problem.DECODE: invalid("The audio file cannot be decoded."),
    Problem.TOO_LONG: invalid("The audio is too long: at most 5 minutes are supported."),
    Problem.TOO_LARGE: invalid("The audio is too large: at most 10 MB are supported."),
    Problem.BAD_CHANNEL: invalid("The audio has no such channel."),
    Problem.ENGINE: ApiError(500, "InternalError", INTERNAL_MESSAGE),
}


async def recognize(em: Emulator, req: SyncRequest) -> Recognized:
    limits = MediaLimits(
        max_duration_s=em.config.sync_max_duration_s, max_bytes=em.config.sync_max_bytes
    )
    audio = AudioRequest(
        req.audio, language=req.options.language, context=req.options.context, limits=limits
    )
    try:
        done = await em.backend.run(audio, sync=True)
    except AudioFailure as exc:
        raise SYNC_ERRORS[exc.problem] from None
    transcript = done.transcripts[0]
    language = transcript.language or req.options.language or "en"
    return Recognized(transcript.text, language, done.probe.duration_s)


async def _stream(events: Iterable[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


async def multimodal(request: Request) -> Response:
    """E4: JSON, or SSE when ``X-DashScope-SSE: enable``; errors in the same dialect."""
    rid = request_id(request)
    sse = header_enabled(request, "x-dashscope-sse")
    try:
        req = parse_multimodal(
            await read_json(request), stream=sse, oss_resolve=header_enabled(request, OSS_RESOLVE)
        )
        rec = await recognize(emulator(request), req)
    except ApiError as err:
        if sse:
            return Response(
                native_error_event(err.status, err.native_body(rid)),
                status_code=err.status,
                media_type=SSE_TYPE,
            )
        return native_error(err, rid)
    if sse:
        return StreamingResponse(
            _stream(native_events(rec, rid, incremental=req.incremental)),
            media_type=SSE_TYPE,
            headers=SSE_HEADERS,
        )
    return Json(native_body(rec, rid))


async def chat_completions(request: Request) -> Response:
    """E5: OpenAI chat completions: qwen3-asr-flash (both modes), qwen3-omni-flash (stream)."""
    rid = request_id(request)
    em = emulator(request)
    try:
        req = parse_chat(await read_json(request), oss_resolve=header_enabled(request, OSS_RESOLVE))
        rec = await recognize(em, req)
    except ApiError as err:
        return compat_error(err, rid)
    ident = f"chatcmpl-{uuid.uuid4()}"
    created = int(em.clock())
    if req.stream:
        chunks = completion_chunks(
            rec,
            completion_id=ident,
            created=created,
            model=req.model,
            include_usage=req.include_usage,
        )
        return StreamingResponse(
            _stream(chunks),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, "x-request-id": rid},
        )
    return Json(
        completion_body(rec, completion_id=ident, created=created, model=req.model),
        headers={"x-request-id": rid},
    )


routes = [
    Route("/api/v1/services/aigc/multimodal-generation/generation", multimodal, methods=["POST"]),
    Route("/compatible-mode/v1/chat/completions", chat_completions, methods=["POST"]),
]
