"""How hard we lean on the provider: an in-flight task cap and a request rate.

These are the in-process versions for embedded runs; ``workers/limits.py`` has the same two
shared through Redis, so a whole fleet stays under one cap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from pipeline.asr.dashscope.client import DashScopeClient
from pipeline.asr.dashscope.sync import SyncResult
from pipeline.asr.dashscope.tasks import Submitted, TaskStatus, TaskSummary


class SubmitGate(Protocol):
    def admit(self) -> Any:
        """A context manager yielding how many more tasks may be submitted now; while it
        is held nobody else can take the same room."""
        ...


class RateLimiter(Protocol):
    def acquire(self) -> None: ...


class LocalGate:
    def __init__(self, cap: int, inflight: Callable[[], int]) -> None:
        self.cap = cap
        self.inflight = inflight
        self._lock = threading.Lock()

    @contextmanager
    def admit(self) -> Iterator[int]:
        with self._lock:
            yield self.cap - self.inflight()


class TokenBucket:
    """``rate`` requests per second with bursts of ``burst``; acquire() sleeps as needed."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self.sleep(wait)


class ThrottledClient:
    """A DashScope client whose every API call first takes a token from the limiter.

    Result documents are fetched from signed OSS URLs, not the API: not limited."""

    def __init__(self, client: DashScopeClient, limiter: RateLimiter) -> None:
        self._client = client
        self._limiter = limiter

    def submit_transcription(
        self,
        model: str,
        file_urls: Sequence[str],
        parameters: Mapping[str, Any],
        *,
        oss_resolve: bool = False,
    ) -> Submitted:
        self._limiter.acquire()
        return self._client.submit_transcription(
            model, file_urls, parameters, oss_resolve=oss_resolve
        )

    def query_task(self, task_id: str) -> TaskStatus:
        self._limiter.acquire()
        return self._client.query_task(task_id)

    def list_tasks(
        self, *, model: str | None = None, page_size: int = 100, max_pages: int = 50
    ) -> list[TaskSummary]:
        self._limiter.acquire()
        return self._client.list_tasks(model=model, page_size=page_size, max_pages=max_pages)

    def cancel_task(self, task_id: str) -> None:
        self._limiter.acquire()
        self._client.cancel_task(task_id)

    def fetch_result(self, url: str) -> dict[str, Any]:
        return self._client.fetch_result(url)

    def upload_temporary(
        self, path_or_bytes: bytes | str | os.PathLike[str], filename: str, model: str
    ) -> str:
        self._limiter.acquire()
        return self._client.upload_temporary(path_or_bytes, filename, model)

    def recognize(
        self,
        model: str,
        audio: str,
        *,
        language: str | None = None,
        enable_itn: bool = False,
        context: str | None = None,
        stream: bool = False,
    ) -> SyncResult:
        self._limiter.acquire()
        return self._client.recognize(
            model, audio, language=language, enable_itn=enable_itn, context=context, stream=stream
        )

    def chat_transcribe(
        self,
        model: str,
        audio_data: str,
        *,
        language: str | None = None,
        context: str | None = None,
        stream: bool = False,
        fmt: str = "wav",
    ) -> SyncResult:
        self._limiter.acquire()
        return self._client.chat_transcribe(
            model, audio_data, language=language, context=context, stream=stream, fmt=fmt
        )
