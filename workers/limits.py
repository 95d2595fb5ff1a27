"""The provider caps, shared by every worker on every host through Redis.

``RedisGate``: a short Redis lock around "count tasks in flight, claim items", so two
submitters can never both take the last slot. ``RedisTokenBucket``: one request budget for
the whole fleet, refilled continuously, taken atomically in a Lua script.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_BUCKET = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', key, 'tokens', tokens, 'at', now)
redis.call('EXPIRE', key, 3600)
return tostring(wait)
"""


class RedisTokenBucket:
    def __init__(self, redis: Any, rate: float, *, burst: float | None = None,
                 key: str = "bulkscribe:provider:bucket",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.redis = redis
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.key = key
        self.sleep = sleep
        self._script = redis.register_script(_BUCKET)

    def acquire(self) -> None:
        while True:
            wait = float(self._script(keys=[self.key], args=[self.rate, self.burst, time.time()]))
            if wait <= 0:
                return
            self.sleep(wait)


class RedisGate:
    def __init__(self, redis: Any, cap: int, inflight: Callable[[], int], *,
                 key: str = "bulkscribe:provider:gate", timeout_s: float = 30.0) -> None:
        self.redis = redis
        self.cap = cap
        self.inflight = inflight
        self.key = key
        self.timeout_s = timeout_s

    @contextmanager
    def admit(self) -> Iterator[int]:
        with self.redis.lock(self.key, timeout=self.timeout_s, blocking_timeout=self.timeout_s):
            yield self.cap - self.inflight()
