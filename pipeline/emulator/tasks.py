"""Async tasks: what was asked, what happened when, and the status that follows.

Status is never stored. A task keeps its :class:`TaskSpec` (fixed at submission, fate and
latency included) and a :class:`Timeline` of facts (admitted, work finished, cancelled);
:func:`status_at` derives ``PENDING | RUNNING | SUCCEEDED | FAILED | CANCELED | UNKNOWN`` from
those and a time, in O(1). :class:`TaskStore` only decides *when* tasks are admitted:
``max_concurrency`` slots, FIFO, and admissions back-dated to the moment a slot freed, so
what a client sees does not depend on how often anyone polls.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from pipeline.emulator.catalog import Family
from pipeline.emulator.faults import Fate


class Status(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class JobOptions:
    """The recognition parameters a task or a sync call asked for, as the engine sees them."""

    channels: tuple[int, ...] = (0,)
    language: str | None = None
    diarization: bool = False
    enable_words: bool = True
    context: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str
    seq: int  # n-th task of this run: keys the fate draw
    model: str
    family: Family
    file_urls: tuple[str, ...]
    options: JobOptions
    submitted_at: float
    latency_s: float
    fate: Fate = Fate.OK


@dataclass(frozen=True, slots=True)
class FileOk:
    file_url: str
    document: bytes  # the result JSON, serialised once
    duration_s: float


@dataclass(frozen=True, slots=True)
class FileFailed:
    file_url: str
    code: str
    message: str


FileOutcome = FileOk | FileFailed


@dataclass(frozen=True, slots=True)
class Timeline:
    started_at: float | None = None  # admitted into a slot: RUNNING from here
    work_done_at: float | None = None  # transcription finished (OK fate only)
    canceled_at: float | None = None


@dataclass(slots=True)
class TaskRecord:
    """The store's one mutable row per task; every field is replaced, never edited."""

    spec: TaskSpec
    timeline: Timeline = Timeline()
    outcomes: tuple[FileOutcome, ...] = ()


def end_time(spec: TaskSpec, tl: Timeline) -> float | None:
    """When the task leaves RUNNING, if that is known yet."""
    if tl.started_at is None or spec.fate is Fate.STUCK:
        return None
    earliest = tl.started_at + spec.latency_s
    if spec.fate is not Fate.OK:  # failed and lost tasks do no work
        return earliest
    return None if tl.work_done_at is None else max(earliest, tl.work_done_at)


def expires_at(spec: TaskSpec, tl: Timeline, ttl_s: float) -> float:
    """Tasks live ``ttl_s`` after they end (or are cancelled); unfinished ones after submission."""
    end = end_time(spec, tl)
    ref = tl.canceled_at if tl.canceled_at is not None else end
    return (spec.submitted_at if ref is None else ref) + ttl_s


def aggregate(outcomes: tuple[FileOutcome, ...]) -> Status:
    """SUCCEEDED if any file succeeded (the service's rule), else FAILED."""
    return Status.SUCCEEDED if any(isinstance(o, FileOk) for o in outcomes) else Status.FAILED


def status_at(rec: TaskRecord, now: float, ttl_s: float) -> Status:
    spec, tl = rec.spec, rec.timeline
    if now >= expires_at(spec, tl, ttl_s):
        return Status.UNKNOWN
    if tl.canceled_at is not None:
        return Status.CANCELED
    if tl.started_at is None:
        return Status.PENDING
    end = end_time(spec, tl)
    if end is None or now < end:
        return Status.RUNNING
    if spec.fate is Fate.LOST:
        return Status.UNKNOWN
    if spec.fate is Fate.FAIL:
        return Status.FAILED
    return aggregate(rec.outcomes)


class TaskStore:
    """Tasks by id, the FIFO of waiting ones, and the slots they run in."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._received: dict[str, TaskSpec] = {}  # every task ever accepted, until reset
        self._pending: deque[str] = deque()
        self._running: set[str] = set()
        self._free: list[float] = [float("-inf")] * self.capacity  # when each free slot freed

    def add(self, spec: TaskSpec) -> TaskRecord:
        rec = TaskRecord(spec)
        self._tasks[spec.task_id] = rec
        self._received[spec.task_id] = spec
        self._pending.append(spec.task_id)
        return rec

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def was_received(self, task_id: str) -> bool:
        return task_id in self._received

    def received(self) -> Iterator[TaskSpec]:
        return iter(self._received.values())

    def records(self) -> Iterator[TaskRecord]:
        return iter(self._tasks.values())

    def advance(self, now: float) -> list[TaskSpec]:
        """Free the slots of tasks that ended by ``now`` and admit waiting tasks into them.

        Returns the newly admitted tasks that have transcription work to start.
        """
        for task_id in [t for t in self._running if self._ended_by(t, now)]:
            self._release(task_id)
        admitted: list[TaskSpec] = []
        while self._pending and self._free:
            rec = self._tasks.get(self._pending[0])
            if rec is None or rec.timeline.canceled_at is not None:
                self._pending.popleft()  # swept or cancelled while waiting
                continue
            start = max(rec.spec.submitted_at, self._free[0])
            if start > now:
                break
            heapq.heappop(self._free)
            self._pending.popleft()
            rec.timeline = replace(rec.timeline, started_at=start)
            if rec.spec.fate is Fate.STUCK:
                # A stuck task shows RUNNING forever but must not starve the queue: it gives
                # its slot back at once (deliberate: see the emulator README notes).
                heapq.heappush(self._free, start)
                continue
            self._running.add(rec.spec.task_id)
            if self._ended_by(rec.spec.task_id, now):  # failed/lost: end is already known
                self._release(rec.spec.task_id)
            if rec.spec.fate is Fate.OK:
                admitted.append(rec.spec)
        return admitted

    def work_done(self, task_id: str, outcomes: tuple[FileOutcome, ...], at: float) -> None:
        rec = self._tasks.get(task_id)
        if rec is not None and rec.timeline.work_done_at is None:
            rec.outcomes = outcomes
            rec.timeline = replace(rec.timeline, work_done_at=at)

    def cancel(self, task_id: str, now: float, ttl_s: float) -> bool:
        """Cancel a PENDING task; False for any other status."""
        rec = self._tasks.get(task_id)
        if rec is None or status_at(rec, now, ttl_s) is not Status.PENDING:
            return False
        rec.timeline = replace(rec.timeline, canceled_at=now)
        return True

    def sweep(self, now: float, ttl_s: float) -> int:
        """Forget expired tasks (they answer UNKNOWN); returns how many went."""
        gone = [
            r.spec.task_id
            for r in self._tasks.values()
            if now >= expires_at(r.spec, r.timeline, ttl_s)
        ]
        for task_id in gone:
            if task_id in self._running:
                self._release(task_id, at=now)
            del self._tasks[task_id]
        return len(gone)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _ended_by(self, task_id: str, now: float) -> bool:
        rec = self._tasks[task_id]
        end = end_time(rec.spec, rec.timeline)
        return end is not None and end <= now

    def _release(self, task_id: str, at: float | None = None) -> None:
        """Give the task's slot back as of its end time (or ``at``, if it never ended)."""
        self._running.discard(task_id)
        rec = self._tasks[task_id]
        end = end_time(rec.spec, rec.timeline)
        freed = end if end is not None else at
        heapq.heappush(self._free, freed if freed is not None else float("-inf"))
