"""The provider caps, shared by every worker on every host through Redis.

``RedisGate``: a short Redis lock around "count tasks in flight, claim items", so two
submitters can never both take the last slot (a count is reused for up to a second).
``RedisTokenBucket``: one request budget for the whole fleet, refilled continuously, taken
atomically in a Lua script. The same script counts each request it lets through in a counter
per 10 seconds (``RATE_KEY``), so the measured rate (:func:`measured_rate`, the console's Fleet
page) costs no extra round trip and no ledger query.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError

RATE_KEY = "bulkscribe:provider:requests"
RATE_STEP_S = 10  # one counter per 10 s of requests
RATE_WINDOW_S = 60  # the measured rate is over the last minute
RATE_TTL_S = RATE_WINDOW_S + RATE_STEP_S  # a counter outlives every window it falls in
LOCK_SLEEP_S = 0.1  # between tries for the gate's lock (redis-py's Lock default)

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
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
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
        rate_key: str = RATE_KEY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.key = key
        self.rate_key = rate_key
        self.sleep = sleep
        self.clock = clock
        self._script = redis.register_script(_BUCKET)

    def acquire(self) -> None:
        while True:
            now = self.clock()
            counter = f"{self.rate_key}:{int(now // RATE_STEP_S)}"
            wait = float(
                self._script(
                    keys=[self.key, counter], args=[self.rate, self.burst, now, RATE_TTL_S]
                )
            )
            if wait <= 0:
                return
            self.sleep(wait)


def rate_window(now: float, *, key: str = RATE_KEY) -> tuple[list[str], float]:
    """The counters that cover the last minute up to ``now`` (the newest partly elapsed),
    and how many seconds they cover: between 50 and 60."""
    newest = int(now // RATE_STEP_S)
    n = RATE_WINDOW_S // RATE_STEP_S
    keys = [f"{key}:{b}" for b in range(newest - n + 1, newest + 1)]
    return keys, (n - 1) * RATE_STEP_S + (now - newest * RATE_STEP_S)


def measured_rate(redis: Any, *, key: str = RATE_KEY, now: float | None = None) -> float:
    """Provider requests per second over the last minute, fleet-wide: one MGET.

    Dividing by the seconds the counters really cover (not a flat 60) keeps a steady rate
    from reading low just after a counter starts."""
    keys, seconds = rate_window(time.time() if now is None else now, key=key)
    return sum(int(n) for n in redis.mget(keys) if n is not None) / seconds


# The gate's lock taken and the room last reckoned read in one atomic step: nil when the
# lock is held by someone else, else {room or false}.
_ENTER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('GET', KEYS[2])}
end
return nil
"""
# The room left written (unless none is given) and the lock given back (if still ours: 1,
# else 0) in one step.
_LEAVE = """
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisGate:
    """Admission under a Redis lock, with the ledger's in-flight count taken at most every
    ``recount_s``: in between, each admission that found room takes one task's worth off the
    room last counted. Tasks enter flight only through this gate, and between counts they
    can only leave it, so the room so reckoned is never more than the true room and the cap
    holds; it spares the ledger a count (a scan of the SUBMITTED items) per submission.

    The lock is taken with the room read, and given back with the room written, by two Lua
    scripts: two round trips to Redis per admission instead of four (lock, read, write,
    unlock)."""

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
        self._enter = redis.register_script(_ENTER)
        self._leave = redis.register_script(_LEAVE)

    @contextmanager
    def admit(self) -> Iterator[int]:
        token = uuid.uuid4().hex
        cached = self._acquire(token)
        reckoned = ""  # the room left, as stored; none if the count itself failed
        try:
            room, counted_at = self._room(cached)
            left = room - 1 if room > 0 else room
            reckoned = f"{left} {counted_at}"
            yield room
        finally:
            if not self._leave(keys=[self.key, self.room_key], args=[token, reckoned, 60]):
                # As redis-py's Lock: the step outlived the lock's timeout, and someone
                # else may have admitted meanwhile.
                raise LockNotOwnedError("the submit gate's lock expired while held")

    def full(self) -> bool:
        """Whether the last admission found no room or took the last of it: items may be
        waiting for a task to end. One read, no lock."""
        cached = self.redis.get(self.room_key)
        return cached is not None and int(cached.split()[0]) <= 0

    def _acquire(self, token: str) -> Any:
        """Take the lock (waiting up to ``timeout_s``, as redis-py's Lock); the room last
        reckoned, as stored (None if none)."""
        give_up = time.monotonic() + self.timeout_s
        args = [token, int(self.timeout_s * 1000)]
        while True:
            got = self._enter(keys=[self.key, self.room_key], args=args)
            if got is not None:
                return got[0] or None
            if time.monotonic() >= give_up:
                raise LockError("the submit gate's lock could not be taken in time")
            time.sleep(LOCK_SLEEP_S)

    def _room(self, cached: Any) -> tuple[int, float]:
        now = self.clock()
        if cached:
            room, counted_at = cached.split()
            if int(room) > 0 and 0 <= now - float(counted_at) < self.recount_s:
                return int(room), float(counted_at)
        return self.cap - self.inflight(), now
