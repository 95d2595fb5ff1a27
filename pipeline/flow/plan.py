"""Which steps to start now, given the items' ledger rows. Pure; both drivers use it.

Most advanced items first (polls, then transcribes and submits, then prepares), so results
come out steadily; prepares are held back when enough normalized audio is already waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import Action, next_action
from pipeline.ledger import ItemRow
from pipeline.states import ItemState


@dataclass(frozen=True, slots=True)
class Job:
    action: Action | None  # None: reconcile a lost submission
    ids: tuple[str, ...]
    task_id: str | None = None  # for POLL
    rows: tuple[ItemRow, ...] = ()


RECONCILE = None


def plan_jobs(
    rows: Iterable[ItemRow],
    mode_of: Callable[[ItemRow], Mode],
    now: datetime,
    *,
    busy: set[str] = frozenset(),  # type: ignore[assignment]
    prepare_room: int,
    submit_room: int,
    batch_size: Callable[[str], int],
    default_model: str,
) -> list[Job]:
    """Jobs for due rows, in priority order. ``mode_of`` may raise for an unknown model."""
    polls: dict[str, list[ItemRow]] = {}
    submits: dict[str, list[ItemRow]] = {}
    reconciles: list[Job] = []
    transcribes: list[Job] = []
    prepares: list[Job] = []
    for row in sorted(rows, key=lambda r: (r.batch_id, r.line_no)):
        if row.id in busy:
            continue
        if row.state is ItemState.SUBMITTING:
            if row.lease_until is None or row.lease_until <= now:  # its submitter is gone
                reconciles.append(Job(RECONCILE, (row.id,), rows=(row,)))
            continue
        action = next_action(row, mode_of(row), now)
        if action is Action.POLL:
            polls.setdefault(str(row.provider_task_id), []).append(row)
        elif action is Action.SUBMIT:
            submits.setdefault(str(row.spec.get("model") or default_model), []).append(row)
        elif action is Action.TRANSCRIBE:
            transcribes.append(Job(action, (row.id,), rows=(row,)))
        elif action is Action.PREPARE:
            prepares.append(Job(action, (row.id,), rows=(row,)))
    jobs = reconciles
    jobs += [Job(Action.POLL, tuple(r.id for r in due), task_id=t, rows=tuple(due))
             for t, due in polls.items()]
    jobs += transcribes
    room = max(0, submit_room)
    for model, waiting in submits.items():
        size = max(1, batch_size(model))
        for i in range(0, len(waiting), size):
            if room <= 0:
                break
            chunk = tuple(waiting[i:i + size])
            jobs.append(Job(Action.SUBMIT, tuple(r.id for r in chunk), rows=chunk))
            room -= 1
    jobs += prepares[: max(0, prepare_room)]
    return jobs


def count_states(rows: Sequence[ItemRow], *states: ItemState) -> int:
    return sum(1 for r in rows if r.state in states)
