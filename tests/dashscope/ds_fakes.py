"""Scripted DashScope answers for httpx.MockTransport: no network, every request recorded."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from pipeline.asr.dashscope import DashScopeClient

BASE = "https://dashscope.test/api/v1"
COMPAT = "https://dashscope.test/compatible-mode/v1"
KEY = "sk-test-key"
REQUEST_ID = "5d56818d-d30c-49a7-bca1-6b3a2340686e"
TASK_ID = "68ca5d10-7c49-4abe-9550-4763105f8316"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler answering from a queue and keeping every request it saw."""

    def __init__(self, *answers: Answer) -> None:
        self.answers: list[Answer] = list(answers)
        self.requests: list[httpx.Request] = []

    def add(self, *answers: Answer) -> Script:
        self.answers.extend(answers)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def make_client(
    script: Script,
    *,
    api_key: str | None = KEY,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> DashScopeClient:
    http = httpx.Client(transport=httpx.MockTransport(script), headers=headers)
    return DashScopeClient(BASE, api_key, http, **kwargs)


def ok(body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"request_id": REQUEST_ID, "code": code, "message": message}
    return httpx.Response(status, json=body, headers=headers)


def sse(text: str) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream;charset=UTF-8"}, content=text.encode()
    )


def native_event(n: int, text: str, finish: str = "null", **extra: Any) -> str:
    """One native SSE event as the service frames it (§2.6)."""
    message: dict[str, Any] = {"role": "assistant", "content": [{"text": text}]}
    message.update(extra)
    data = {
        "output": {"choices": [{"finish_reason": finish, "message": message}]},
        "usage": {"seconds": 2},
        "request_id": REQUEST_ID,
    }
    return f"id:{n}\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(data)}\n\n"


def compat_chunk(content: str | None, finish: str | None = None, **delta: Any) -> str:
    d: dict[str, Any] = dict(delta)
    if content is not None:
        d["content"] = content
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1767683986,
        "model": "qwen3-asr-flash",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


class Raising(httpx.SyncByteStream):
    """A response body that yields some bytes, then fails like a dropped connection."""

    def __init__(self, first: bytes, exc: Exception) -> None:
        self.first, self.exc = first, exc

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise self.exc
