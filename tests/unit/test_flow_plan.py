"""Unit tests for pipeline.flow.plan: the order jobs come out in, and the Agenda's bookkeeping
as rows change (pure: rows are built here, nothing touches a ledger)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from support import item_row

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import Action
from pipeline.flow.plan import Agenda, Lane, plan_jobs
from pipeline.ledger import ItemRow
from pipeline.states import ItemState

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def row(n: int, state: ItemState = ItemState.PENDING, **values: Any) -> ItemRow:
    spec = {"model": values.pop("model", "fun-asr")}
    row: ItemRow = item_row(n, state, spec=spec, at=NOW, **values)
    return row


def agenda(mode: Mode = Mode.ASYNC, size: int = 3) -> Agenda:
    return Agenda(lambda _r: mode, batch_size=lambda _m: size, default_model="fun-asr")


def plan(rows: list[ItemRow], **kw: Any) -> list[tuple[Action, tuple[str, ...]]]:
    jobs = plan_jobs(
        rows,
        lambda _r: Mode.ASYNC,
        NOW,
        prepare_room=kw.pop("prepare_room", 99),
        submit_room=kw.pop("submit_room", 99),
        batch_size=lambda _m: 2,
        default_model="fun-asr",
        **kw,
    )
    return [(j.action, j.ids) for j in jobs]


def test_most_advanced_first_each_kind_in_manifest_order() -> None:
    """Reconciles, polls, submits (async), prepares; within a kind by line number."""
    rows = [
        row(5),
        row(4, ItemState.PREPARED),
        row(3, ItemState.SUBMITTED, provider_task_id="t"),
        row(2, ItemState.SUBMITTING),
        row(1),
    ]
    assert plan(rows) == [
        (Action.RECONCILE, ("id2",)),
        (Action.POLL, ("id3",)),
        (Action.SUBMIT, ("id4",)),
        (Action.PREPARE, ("id1",)),
        (Action.PREPARE, ("id5",)),
    ]


def test_polls_group_a_tasks_rows_and_submits_batch_per_model() -> None:
    """Rows of one provider task poll together; prepared rows go in groups of batch_size,
    model by model, earliest waiting model first."""
    rows = [
        row(1, ItemState.SUBMITTED, provider_task_id="t1"),
        row(2, ItemState.SUBMITTED, provider_task_id="t2"),
        row(3, ItemState.SUBMITTED, provider_task_id="t1"),
        *(
            row(n, ItemState.PREPARED, model="paraformer-v2" if n == 4 else "fun-asr")
            for n in range(4, 9)
        ),
    ]
    assert plan(rows) == [
        (Action.POLL, ("id1", "id3")),
        (Action.POLL, ("id2",)),
        (Action.SUBMIT, ("id4",)),
        (Action.SUBMIT, ("id5", "id6")),
        (Action.SUBMIT, ("id7", "id8")),
    ]


def test_rooms_busy_and_not_yet_due_rows_hold_work_back() -> None:
    """prepare_room and submit_room cap their kinds; busy rows and rows not due are left."""
    later = NOW + timedelta(seconds=5)
    rows = [
        row(1),
        row(2),
        row(3),
        row(4, next_run_at=later),
        row(5, ItemState.PREPARED),
        row(6, ItemState.PREPARED),
        row(7, ItemState.PREPARED),
        row(8, ItemState.PREPARED),
    ]
    assert plan(rows, prepare_room=1, submit_room=1, busy={"id1"}) == [
        (Action.SUBMIT, ("id5", "id6")),
        (Action.PREPARE, ("id2",)),
    ]


def test_submitting_row_waits_for_its_lease() -> None:
    """A submission in progress is reconciled only once its submitter's lease ran out."""
    held = row(1, ItemState.SUBMITTING, lease_until=NOW + timedelta(minutes=1))
    assert plan([held]) == []
    assert plan([replace(held, lease_until=NOW)]) == [(Action.RECONCILE, ("id1",))]


def test_agenda_hands_out_once_until_put_back() -> None:
    """A row taken is not handed out again until its new state is put; lanes and limits
    split the work between pools."""
    a = agenda(Mode.CLIP)
    for n in range(1, 5):
        a.put(row(n))
    a.put(row(9, ItemState.PREPARED))
    cpu = (Lane.TRANSCRIBE, Lane.PREPARE)
    assert [j.ids for j in a.take(NOW, lanes=cpu, limit=2, prepare_room=9)] == [("id9",), ("id1",)]
    assert a.take(NOW, lanes=(Lane.POLL, Lane.SUBMIT), prepare_room=9) == []
    assert [j.ids for j in a.take(NOW, lanes=cpu, limit=1, prepare_room=9)] == [("id2",)]
    a.put(row(1, ItemState.FAILED))  # finished: forgotten
    a.put(row(2, ItemState.PREPARED))  # back with a new state: transcribed next
    assert len(a) == 4 and a.prepared == 2
    assert [(j.action, j.ids) for j in a.take(NOW, lanes=cpu, prepare_room=9)] == [
        (Action.TRANSCRIBE, ("id2",)),
        (Action.PREPARE, ("id3",)),
        (Action.PREPARE, ("id4",)),
    ]


def test_agenda_promotes_rows_when_due_and_reports_the_next_due() -> None:
    """A row with next_run_at in the future waits; next_due says when; a row filed again
    replaces its old place."""
    a = agenda()
    a.put(row(1, next_run_at=NOW + timedelta(seconds=30)))
    a.put(row(2, next_run_at=NOW + timedelta(seconds=10)))
    assert a.take(NOW, prepare_room=9) == []
    assert a.next_due() == NOW + timedelta(seconds=10)
    a.put(row(2, next_run_at=NOW + timedelta(seconds=60)))  # rescheduled
    assert a.next_due() == NOW + timedelta(seconds=30)
    assert [j.ids for j in a.take(NOW + timedelta(seconds=40), prepare_room=9)] == [("id1",)]
    assert a.next_due() == NOW + timedelta(seconds=60)
    a.forget("id2")
    assert a.next_due() is None and len(a) == 1  # id1 is out at work


def test_fun_asr_task_rows_due_at_once_poll_as_one_job() -> None:
    """Rows of one task promoted together give one poll job even with room for one."""
    a = agenda()
    for n in (1, 2, 3):
        a.put(row(n, ItemState.SUBMITTED, provider_task_id="t"))
    jobs = a.take(NOW, lanes=(Lane.POLL,), limit=1, prepare_room=0)
    assert [(j.task_id, j.ids) for j in jobs] == [("t", ("id1", "id2", "id3"))]
    assert a.take(NOW, prepare_room=0) == []
