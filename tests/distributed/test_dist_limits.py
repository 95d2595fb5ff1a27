"""The fleet-wide provider limits in real Redis: the in-flight cap and the request rate.

Two gate objects stand for two worker hosts; the ledger's in-flight count is a counter
here, fed by the admissions and drained as "tasks" finish.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

from dist_support import RedisServer

from workers.limits import RedisGate, RedisTokenBucket


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
