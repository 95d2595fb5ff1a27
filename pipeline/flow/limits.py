"""How hard we lean on the provider: an in-flight task cap and a request rate.

These are the in-process versions for embedded runs; ``workers/limits.py`` has the same two
shared through Redis, so a whole fleet stays under one cap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


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


_LIMITED = (
    "submit_transcription",
    "query_task",
    "list_tasks",
    "cancel_task",
    "recognize",
    "chat_transcribe",
    "upload_temporary",
)


class ThrottledClient:
    """Wraps a provider client so every API call first takes a token from the limiter."""

    def __init__(self, client: Any, limiter: RateLimiter) -> None:
        self._client = client
        self._limiter = limiter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in _LIMITED:
            return attr

        def limited(*args: Any, **kwargs: Any) -> Any:
            self._limiter.acquire()
            return attr(*args, **kwargs)

        return limited
