"""Which steps to start now, given the items' ledger rows. Pure; both drivers use it.

Most advanced items first (reconciles, polls, then transcribes and submits, then prepares),
each kind in manifest order, so results come out steadily; prepares are held back when
enough normalized audio is already waiting.

:class:`Agenda` keeps that plan incrementally: a row is filed once when it changes (into a
heap of rows waiting for their time, then a heap per kind of step once due), and taking a
job costs a heap pop, so a run's planning is linear in its length, not quadratic (the
embedded driver used to sort and re-plan every remaining row after each step: 4,000
missing files took a minute). :func:`plan_jobs` is the same plan over a fixed set of rows,
for the distributed dispatcher and sweeper.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import Action, action_for, due_from, queue_for
from pipeline.ledger import ItemRow
from pipeline.ledger.budgets import is_parked
from pipeline.states import ItemState


@dataclass(frozen=True, slots=True)
class Job:
    action: Action
    ids: tuple[str, ...]
    task_id: str | None = None  # for POLL
    rows: tuple[ItemRow, ...] = ()


class Lane(StrEnum):
    """The kinds of job, in the order they are handed out (each named as its Action)."""

    RECONCILE = "reconcile"
    POLL = "poll"
    TRANSCRIBE = "transcribe"
    SUBMIT = "submit"
    PREPARE = "prepare"


ALL_LANES: tuple[Lane, ...] = tuple(Lane)


def lanes_on(*queues: str) -> tuple[Lane, ...]:
    """The lanes whose steps run on ``queues`` (the Celery queue table, which the embedded
    runner's two pools mirror)."""
    return tuple(lane for lane in Lane if queue_for(Action(lane.value)) in queues)


_LONG_AGO = datetime.min.replace(tzinfo=UTC)  # "due since always": rows with no next_run_at


def lane_of(row: ItemRow, mode: Mode) -> tuple[Lane | None, datetime | None]:
    """The lane ``row`` waits in and from when (None: due already), or (None, None) when no
    step applies (claimed by someone, or finished)."""
    action = action_for(row, mode)
    if action is None:
        return None, None
    return Lane(action.value), due_from(row)


@dataclass(slots=True)
class _Entry:
    row: ItemRow
    lane: Lane | None  # None: nothing to do until the row changes (or handed out)
    version: int
    ready: bool = False  # due, and in its lane's heap


_HeapKey = tuple[str, int, int, str]  # batch, line, version, id


def _holds_audio(row: ItemRow) -> bool:
    """Prepared and counted against backpressure (not parked for budget admission)."""
    return row.state is ItemState.PREPARED and not is_parked(row.next_run_at)


class Agenda:
    """The rows of a run, filed for the planner: :meth:`put` each row as it changes,
    :meth:`take` the jobs due now. A row handed out in a job stays counted but is not
    handed out again until it is :meth:`put` back (its step finished).

    Heaps are lazy: a row filed again leaves its old entries behind, recognised by their
    version and skipped when they surface.
    """

    def __init__(
        self,
        mode_of: Callable[[ItemRow], Mode],
        *,
        batch_size: Callable[[ItemRow], int],
        default_model: str,
    ) -> None:
        self._mode_of = mode_of
        self._batch_size = batch_size
        self._default_model = default_model
        self._entries: dict[str, _Entry] = {}
        self._versions = itertools.count()
        self._waiting: list[tuple[datetime, int, str]] = []
        self._lanes: dict[Lane, list[_HeapKey]] = {
            lane: [] for lane in Lane if lane is not Lane.SUBMIT
        }
        self._submits: dict[str, list[_HeapKey]] = {}  # per model: batched per model
        self._polls: dict[str, dict[str, None]] = {}  # task id -> ready ids (ordered)
        self._ready = 0
        self._prepared = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def prepared(self) -> int:
        """Rows last seen PREPARED (waiting to be transcribed or submitted, or at it), less
        those parked for budget admission: they wait for an earlier item, which must still
        find room to be prepared."""
        return self._prepared

    def rows(self) -> list[ItemRow]:
        """Every filed row, as last put."""
        return [entry.row for entry in self._entries.values()]

    def put(self, row: ItemRow) -> None:
        """File ``row`` as it now stands; a finished row is forgotten."""
        self.forget(row.id)
        if row.state.terminal:
            return
        mode = Mode.CLIP if row.state is ItemState.SUBMITTING else self._mode_of(row)
        lane, due = lane_of(row, mode)
        entry = _Entry(row, lane, next(self._versions))
        self._entries[row.id] = entry
        if _holds_audio(row):
            self._prepared += 1
        if lane is not None:
            heapq.heappush(self._waiting, (due or _LONG_AGO, entry.version, row.id))

    def forget(self, item_id: str) -> None:
        entry = self._entries.pop(item_id, None)
        if entry is None:
            return
        if _holds_audio(entry.row):
            self._prepared -= 1
        self._unready(entry)

    def next_due(self) -> datetime | None:
        """When the earliest filed row falls due (long ago if some are due already); None
        when no filed row has a step to wait for."""
        if self._ready:
            return _LONG_AGO
        while self._waiting:
            due, version, item_id = self._waiting[0]
            if self._current(item_id, version) is not None:
                return due
            heapq.heappop(self._waiting)
        return None

    def take(
        self,
        now: datetime,
        *,
        lanes: Collection[Lane] = ALL_LANES,
        limit: int | None = None,
        prepare_room: int,
        submit_room: int | None = None,
    ) -> list[Job]:
        """Up to ``limit`` jobs due at ``now`` from ``lanes``, in priority order; at most
        ``prepare_room`` prepares and ``submit_room`` submissions (Fun-ASR groups count one)."""
        self._promote(now)
        left = limit if limit is not None else len(self._entries)
        jobs: list[Job] = []
        for lane in ALL_LANES:
            if lane not in lanes or left <= 0:
                continue
            if lane is Lane.SUBMIT:
                got = self._take_submits(left if submit_room is None else min(left, submit_room))
            elif lane is Lane.POLL:
                got = self._take_polls(left)
            else:
                room = min(left, prepare_room) if lane is Lane.PREPARE else left
                got = [self._job(lane, (row,)) for row in self._pop(self._lanes[lane], room)]
            jobs += got
            left -= len(got)
        return jobs

    # -- internals ----------------------------------------------------------------------
    def _current(self, item_id: str, version: int) -> _Entry | None:
        entry = self._entries.get(item_id)
        return entry if entry is not None and entry.version == version else None

    def _unready(self, entry: _Entry) -> None:
        if entry.ready:
            entry.ready = False
            self._ready -= 1
            if entry.lane is Lane.POLL:
                task_id = str(entry.row.provider_task_id)
                waiting = self._polls.get(task_id, {})
                waiting.pop(entry.row.id, None)
                if not waiting:
                    self._polls.pop(task_id, None)

    def _promote(self, now: datetime) -> None:
        """Rows whose time has come move from the waiting heap to their lane's."""
        while self._waiting and self._waiting[0][0] <= now:
            _, version, item_id = heapq.heappop(self._waiting)
            entry = self._current(item_id, version)
            if entry is None or entry.lane is None:
                continue
            row = entry.row
            key = (row.batch_id, row.line_no, version, row.id)
            if entry.lane is Lane.SUBMIT:
                model = row.model_or(self._default_model)
                heapq.heappush(self._submits.setdefault(model, []), key)
            else:
                heapq.heappush(self._lanes[entry.lane], key)
                if entry.lane is Lane.POLL:
                    self._polls.setdefault(str(row.provider_task_id), {})[row.id] = None
            entry.ready = True
            self._ready += 1

    def _pop(self, heap: list[_HeapKey], room: int) -> list[ItemRow]:
        """Up to ``room`` ready rows off ``heap``, each marked handed out."""
        rows: list[ItemRow] = []
        while heap and len(rows) < room:
            _, _, version, item_id = heapq.heappop(heap)
            entry = self._current(item_id, version)
            if entry is not None and entry.ready:
                rows.append(self._hand_out(entry))
        return rows

    def _hand_out(self, entry: _Entry) -> ItemRow:
        self._unready(entry)
        entry.lane = None
        entry.version = next(self._versions)  # its heap entries are stale from now on
        return entry.row

    def _head(self, heap: list[_HeapKey]) -> _HeapKey | None:
        while heap:
            key = heap[0]
            entry = self._current(key[3], key[2])
            if entry is not None and entry.ready:
                return key
            heapq.heappop(heap)
        return None

    def _take_polls(self, room: int) -> list[Job]:
        """One job per provider task: every due row it holds (a Fun-ASR task holds many)."""
        jobs: list[Job] = []
        while len(jobs) < room and (firsts := self._pop(self._lanes[Lane.POLL], 1)):
            first = firsts[0]
            task_id = str(first.provider_task_id)
            others = [self._entries[i] for i in self._polls.pop(task_id, {})]
            rows = [first, *sorted((e.row for e in others), key=lambda r: (r.batch_id, r.line_no))]
            for entry in others:
                self._hand_out(entry)
            jobs.append(
                Job(Action.POLL, tuple(r.id for r in rows), task_id=task_id, rows=tuple(rows))
            )
        return jobs

    def _take_submits(self, room: int) -> list[Job]:
        """Groups of up to the model's batch size, model by model (earliest waiting first)."""
        heads = [
            (key, model)
            for model, heap in self._submits.items()
            if (key := self._head(heap)) is not None
        ]
        jobs: list[Job] = []
        for key, model in sorted(heads):
            size = max(1, self._batch_size(self._entries[key[3]].row))
            heap = self._submits[model]
            while len(jobs) < room and (rows := self._pop(heap, size)):
                jobs.append(self._job(Lane.SUBMIT, tuple(rows)))
        return jobs

    @staticmethod
    def _job(lane: Lane, rows: tuple[ItemRow, ...]) -> Job:
        return Job(Action(lane.value), tuple(r.id for r in rows), rows=rows)


def plan_jobs(
    rows: Iterable[ItemRow],
    mode_of: Callable[[ItemRow], Mode],
    now: datetime,
    *,
    busy: Collection[str] = frozenset(),
    prepare_room: int,
    submit_room: int,
    batch_size: Callable[[ItemRow], int],
    default_model: str,
) -> list[Job]:
    """Jobs for due rows, in priority order. ``mode_of`` may raise for an unknown model."""
    agenda = Agenda(mode_of, batch_size=batch_size, default_model=default_model)
    for row in rows:
        if row.id not in busy:
            agenda.put(row)
    return agenda.take(now, prepare_room=max(0, prepare_room), submit_room=max(0, submit_room))
