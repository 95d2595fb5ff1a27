"""The provider caps, shared by every worker on every host through Redis.

``RedisGate``: a short Redis lock around "count tasks in flight, claim items", so two
submitters can never both take the last slot (a count is reused for up to a second).
``RedisTokenBucket``: one request budget for the whole fleet, refilled continuously, taken
atomically in a Lua script.
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
    def __init__(
        self,
        redis: Any,
        rate: float,
        *,
        burst: float | None = None,
        key: str = "bulkscribe:provider:bucket",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
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
    """Admission under a Redis lock, with the ledger's in-flight count taken at most every
    ``recount_s``: in between, each admission that found room takes one task's worth off the
    room last counted. Tasks enter flight only through this gate, and between counts they
    can only leave it, so the room so reckoned is never more than the true room and the cap
    holds; it spares the ledger a count (a scan of the SUBMITTED items) per submission."""

    def __init__(
        self,
        redis: Any,
        cap: int,
        inflight: Callable[[], int],
        *,
        key: str = "bulkscribe:provider:gate",
        timeout_s: float = 30.0,
        recount_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.cap = cap
        self.inflight = inflight
        self.key = key
        self.room_key = f"{key}:room"
        self.timeout_s = timeout_s
        self.recount_s = recount_s
        self.clock = clock

    @contextmanager
    def admit(self) -> Iterator[int]:
        with self.redis.lock(self.key, timeout=self.timeout_s, blocking_timeout=self.timeout_s):
            room, counted_at = self._room()
            try:
                yield room
            finally:
                left = room - 1 if room > 0 else room
                self.redis.set(self.room_key, f"{left} {counted_at}", ex=60)

    def _room(self) -> tuple[int, float]:
        now = self.clock()
        cached = self.redis.get(self.room_key)
        if cached:
            room, counted_at = cached.split()
            if int(room) > 0 and 0 <= now - float(counted_at) < self.recount_s:
                return int(room), float(counted_at)
        return self.cap - self.inflight(), now
