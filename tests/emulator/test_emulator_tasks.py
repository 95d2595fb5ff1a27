"""The task state machine, decided from times and slots alone (no HTTP, no engine)."""

from __future__ import annotations

import pytest

from pipeline.emulator.catalog import Family
from pipeline.emulator.faults import Fate
from pipeline.emulator.tasks import (
    FileFailed,
    FileOk,
    JobOptions,
    Status,
    TaskSpec,
    TaskStore,
    aggregate,
    status_at,
)

TTL = 100.0
OK = (FileOk("u", b"{}", 1.0),)


def spec(n: int, *, at: float = 0.0, latency: float = 1.0, fate: Fate = Fate.OK) -> TaskSpec:
    return TaskSpec(
        f"t{n}", n, "fun-asr", Family.FILE_URLS, ("u",), JobOptions(), at, latency, fate
    )


def status(store: TaskStore, task_id: str, now: float) -> Status:
    rec = store.get(task_id)
    assert rec is not None
    return status_at(rec, now, TTL)


def test_task_runs_for_at_least_latency_then_succeeds() -> None:
    """A task is RUNNING once admitted and SUCCEEDED at start + latency when work was quicker."""
    store = TaskStore(1)
    store.add(spec(0))
    assert status(store, "t0", 0.0) is Status.PENDING
    assert [s.task_id for s in store.advance(0.0)] == ["t0"]
    store.work_done("t0", OK, at=0.3)
    assert status(store, "t0", 0.99) is Status.RUNNING
    assert status(store, "t0", 1.0) is Status.SUCCEEDED


def test_slow_work_keeps_the_task_running() -> None:
    """A transcription that outlasts the latency keeps the task RUNNING until it is done."""
    store = TaskStore(1)
    store.add(spec(0))
    store.advance(0.0)
    assert status(store, "t0", 4.0) is Status.RUNNING
    store.work_done("t0", OK, at=5.0)
    assert status(store, "t0", 4.99) is Status.RUNNING
    assert status(store, "t0", 5.0) is Status.SUCCEEDED


def test_fifo_queue_respects_capacity_and_backdates_admission() -> None:
    """With two slots the third and fourth tasks wait, then start when the slots freed."""
    store = TaskStore(2)
    for n in range(4):
        store.add(spec(n, at=0.1 * n))
    assert [s.task_id for s in store.advance(0.5)] == ["t0", "t1"]
    assert [status(store, f"t{n}", 0.5) for n in range(4)] == [
        Status.RUNNING,
        Status.RUNNING,
        Status.PENDING,
        Status.PENDING,
    ]
    store.work_done("t0", OK, at=0.2)
    store.work_done("t1", OK, at=0.3)
    assert [s.task_id for s in store.advance(7.0)] == ["t2", "t3"]  # polled late...
    started = [store.get(f"t{n}").timeline.started_at for n in range(4)]  # type: ignore[union-attr]
    assert started == [0.0, 0.1, 1.0, 1.1]  # ...but they started when the slots freed
    assert store.running_count == 2


def test_failed_and_lost_tasks_end_after_latency_without_work() -> None:
    """FAIL and LOST fates need no transcription and end at start + latency."""
    store = TaskStore(2)
    store.add(spec(0, fate=Fate.FAIL))
    store.add(spec(1, fate=Fate.LOST))
    assert store.advance(0.0) == []
    assert status(store, "t0", 0.5) is Status.RUNNING
    assert status(store, "t1", 0.5) is Status.RUNNING
    assert status(store, "t0", 1.0) is Status.FAILED
    assert status(store, "t1", 1.0) is Status.UNKNOWN


def test_stuck_task_runs_until_expiry_without_holding_a_slot() -> None:
    """A stuck task is RUNNING until it expires, and the next task still gets its slot."""
    store = TaskStore(1)
    store.add(spec(0, fate=Fate.STUCK))
    store.add(spec(1))
    assert [s.task_id for s in store.advance(0.0)] == ["t1"]
    assert status(store, "t0", TTL - 0.01) is Status.RUNNING
    assert status(store, "t0", TTL) is Status.UNKNOWN


def test_only_pending_tasks_can_be_cancelled() -> None:
    """Cancel succeeds on a PENDING task, which then never runs, and fails on a RUNNING one."""
    store = TaskStore(1)
    store.add(spec(0))
    store.add(spec(1))
    store.advance(0.0)
    assert not store.cancel("t0", 0.1, TTL)
    assert store.cancel("t1", 0.1, TTL)
    assert status(store, "t1", 0.2) is Status.CANCELED
    store.work_done("t0", OK, at=0.2)
    assert store.advance(5.0) == []
    assert status(store, "t1", 5.0) is Status.CANCELED


def test_tasks_expire_ttl_after_they_end_and_are_swept() -> None:
    """A finished task answers UNKNOWN ttl after its end; sweeping forgets it but not its id."""
    store = TaskStore(1)
    store.add(spec(0))
    store.advance(0.0)
    store.work_done("t0", OK, at=0.1)
    assert status(store, "t0", 1.0 + TTL - 0.01) is Status.SUCCEEDED
    assert status(store, "t0", 1.0 + TTL) is Status.UNKNOWN
    assert store.sweep(1.0 + TTL, TTL) == 1
    assert store.get("t0") is None and store.was_received("t0")


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ((FileOk("a", b"", 1.0), FileFailed("b", "X", "x")), Status.SUCCEEDED),
        ((FileFailed("a", "X", "x"), FileFailed("b", "X", "x")), Status.FAILED),
    ],
)
def test_task_succeeds_if_any_file_succeeded(outcomes: tuple, expected: Status) -> None:
    """The service's aggregate rule: one good subtask makes the task SUCCEEDED."""
    assert aggregate(outcomes) is expected
