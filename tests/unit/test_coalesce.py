"""Polls held a moment in the process for company (workers.coalesce.Coalescer): real threads
and the real clock, short countdowns."""

from __future__ import annotations

import threading
import time

from pipeline.flow.actions import Action
from pipeline.flow.plan import Job
from workers.coalesce import HOLD_MAX_S, Coalescer


def poll(n: int) -> Job:
    return Job(Action.POLL, (f"i{n}",), task_id=f"t{n}")


class Shipped:
    def __init__(self) -> None:
        self.calls: list[tuple[float, list[tuple[str, float]]]] = []
        self.event = threading.Event()

    def __call__(self, timed: list[tuple[Job, float]]) -> None:
        self.calls.append((time.monotonic(), [(str(j.task_id), c) for j, c in timed]))
        self.event.set()


def test_jobs_queued_meanwhile_go_out_together_with_what_is_left_of_their_countdowns() -> None:
    """Three polls queued from three threads within the first one's hold (a tenth of its
    2 s countdown) leave in one hand-over; each countdown is shortened by the time it was
    held, so none is polled later than asked."""
    shipped = Shipped()
    held = Coalescer(shipped)
    t0 = time.monotonic()
    threads = [threading.Thread(target=held.add, args=([(poll(n), 2.0 + n)],)) for n in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert shipped.event.wait(5)
    (at, timed), *rest = shipped.calls
    assert rest == []
    assert 0.15 <= at - t0 <= 0.2 + 0.3  # the first poll's hold: 2 s / 10
    assert [t for t, _ in timed] == ["t0", "t1", "t2"]
    for (_, left), asked in zip(timed, (2.0, 3.0, 4.0), strict=True):
        assert asked - (at - t0) - 0.1 <= left <= asked - 0.15
    assert held.held() == 0


def test_a_long_countdown_is_held_at_most_hold_max_s() -> None:
    shipped = Shipped()
    held = Coalescer(shipped)
    t0 = time.monotonic()
    held.add([(poll(1), 60.0)])
    assert shipped.event.wait(5)
    at, timed = shipped.calls[0]
    assert HOLD_MAX_S - 0.05 <= at - t0 <= HOLD_MAX_S + 0.3
    assert 59.0 < timed[0][1] < 60.0


def test_flush_sends_at_once_and_a_failed_send_is_only_logged() -> None:
    """A warm shutdown flushes; a broker error while sending loses the jobs to the sweeper
    (their marks lapse), and the thread keeps serving later ones."""
    shipped = Shipped()
    held = Coalescer(shipped)
    held.add([(poll(1), 30.0), (poll(2), 40.0)])
    held.flush()
    assert [t for t, _ in shipped.calls[0][1]] == ["t1", "t2"]
    assert held.held() == 0

    calls: list[int] = []

    def broken(timed: list[tuple[Job, float]]) -> None:
        calls.append(len(timed))
        if len(calls) == 1:
            raise ConnectionError("broker away")

    flaky = Coalescer(broken)
    flaky.add([(poll(1), 1.0)])
    time.sleep(0.4)
    flaky.add([(poll(2), 1.0)])
    time.sleep(0.4)
    assert calls == [1, 1]
