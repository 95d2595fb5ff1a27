"""The fleet-wide provider limits in real Redis: the in-flight cap and the request rate.

Two gate objects stand for two worker hosts; the ledger's in-flight count is a counter
here, fed by the admissions and drained as "tasks" finish.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from dist_support import RedisServer

from workers.limits import (
    RATE_WINDOW_S,
    RedisGate,
    RedisTokenBucket,
    measured_rate,
    rate_window,
)


class Flight:
    """What the ledger would count: tasks submitted and not finished."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.counts = 0

    def count(self) -> int:
        with self.lock:
            self.counts += 1
            return self.now

    def start(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def finish(self) -> None:
        with self.lock:
            self.now -= 1


def test_cap_holds_across_hosts_under_contention(redis_server: RedisServer) -> None:
    cap, flight = 5, Flight()
    key = f"test:gate:{uuid.uuid4().hex}"
    gates = [
        RedisGate(redis_server.client(), cap, flight.count, key=key, recount_s=0.5)
        for _ in range(2)
    ]
    admitted = []

    def submitter(gate: RedisGate, rounds: int) -> None:
        rng = random.Random()
        for _ in range(rounds):
            with gate.admit() as room:
                if room > 0:
                    flight.start()
                    admitted.append(1)
            if rng.random() < 0.6 and flight.now > 0:
                flight.finish()  # a task somewhere finished
            time.sleep(rng.random() * 0.004)

    threads = [threading.Thread(target=submitter, args=(gates[i % 2], 60)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert flight.peak <= cap
    assert len(admitted) >= 3 * cap  # it admitted, and refilled as tasks finished


def test_room_is_recounted_when_spent_or_stale(redis_server: RedisServer) -> None:
    clock = [1000.0]
    flight = Flight()
    gate = RedisGate(
        redis_server.client(),
        3,
        flight.count,
        key=f"test:gate:{uuid.uuid4().hex}",
        recount_s=1.0,
        clock=lambda: clock[0],
    )
    rooms = []
    for _ in range(4):
        with gate.admit() as room:
            rooms.append(room)
            if room > 0:
                flight.start()
    # Counted once (3 free), then 2 and 1 from that count; spent, so counted again: 0.
    assert rooms == [3, 2, 1, 0]
    assert flight.counts == 2
    flight.finish()
    flight.finish()
    clock[0] += 0.2
    with gate.admit() as room:
        assert room == 2 and flight.counts == 3  # a spent room is always counted afresh
        flight.start()
    clock[0] += 0.2
    with gate.admit() as room:
        assert room == 1 and flight.counts == 3  # from the count 0.2 s ago
    flight.finish()
    clock[0] += 1.5
    with gate.admit() as room:
        # The last admission was reckoned as a task even though none went out (room 0): so
        # this one counts again, and sees the truth.
        assert room == 2 and flight.counts == 4
    clock[0] += 1.5
    with gate.admit() as room:
        assert room == 2 and flight.counts == 5  # room 1 was reckoned 1.5 s ago: counted again


def test_token_bucket_paces_every_client_to_one_rate(redis_server: RedisServer) -> None:
    key = f"test:bucket:{uuid.uuid4().hex}"
    buckets = [RedisTokenBucket(redis_server.client(), 40.0, burst=1.0, key=key) for _ in range(2)]
    done = []

    def take(bucket: RedisTokenBucket) -> None:
        for _ in range(10):
            bucket.acquire()
            done.append(time.monotonic())

    t0 = time.monotonic()
    threads = [threading.Thread(target=take, args=(buckets[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 40 requests at 40/s with a burst of 1: about a second, whoever asks.
    assert len(done) == 40
    assert 0.9 <= max(done) - t0 < 3.0


def test_token_bucket_counts_requests_per_ten_seconds_for_the_measured_rate(
    redis_server: RedisServer,
) -> None:
    """Each request the bucket lets through counts in its 10-second counter (inside the
    bucket's own script); the measured rate is the last minute's counters over the seconds
    they cover; a counter expires (TTL) only after the last minute it is read in."""
    client = redis_server.client()
    tag = uuid.uuid4().hex
    clock = [1_000_000.0]  # a counter starts on every multiple of 10 s
    bucket = RedisTokenBucket(
        client,
        1000.0,
        burst=1000.0,
        key=f"test:bucket:{tag}",
        rate_key=f"test:rate:{tag}",
        clock=lambda: clock[0],
    )

    def rate(at: float) -> float:
        return measured_rate(client, key=f"test:rate:{tag}", now=at)

    assert rate(clock[0]) == 0.0
    for _ in range(30):  # 30 requests in the first 10 s
        bucket.acquire()
    clock[0] += 10.0
    for _ in range(15):  # 15 in the next 10 s, all at its start
        bucket.acquire()
    assert int(client.get(f"test:rate:{tag}:100000")) == 30
    assert int(client.get(f"test:rate:{tag}:100001")) == 15
    assert RATE_WINDOW_S < client.ttl(f"test:rate:{tag}:100000") <= RATE_WINDOW_S + 10
    # 5 s into the second counter: six counters cover 55 s, the first two hold 45 requests.
    assert rate(1_000_015.0) == pytest.approx(45 / 55)
    # A minute after the first counter began it has left the window: 15 over the 50 s
    # that the six newer counters cover so far.
    assert rate(1_000_060.0) == pytest.approx(15 / 50)
    assert rate(1_000_069.999) == pytest.approx(15 / 59.999)
    assert rate(1_000_070.0) == 0.0
    assert rate_window(1_000_070.0, key="k") == ([f"k:{b}" for b in range(100002, 100008)], 50.0)
