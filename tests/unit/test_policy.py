"""Unit tests for pipeline.flow.policy and pipeline.flow.actions: what each ledger row needs
next, batching by the model catalog's facts, and what a worker hands off (plain frozen rows,
no ledger, broker or network)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import item_row

from pipeline.asr.catalog import Mode
from pipeline.errors import FailureCode
from pipeline.flow.actions import (
    POLL_SLACK_S,
    Action,
    action_for,
    after_prepare,
    due_from,
    next_action,
    queue_for,
    redispatch_slack,
)
from pipeline.flow.plan import Job, Lane, lanes_on
from pipeline.flow.policy import (
    COUNTDOWN_MAX_S,
    SchedulePolicy,
    Scheduler,
    countdown_s,
    embedded_prepare_room,
)
from pipeline.ledger import Failure, ItemRow
from pipeline.states import ItemState

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def row(
    n: int = 1,
    state: ItemState = ItemState.PENDING,
    model: str = "fun-asr",
    engine: str = "dashscope",
    **values: Any,
) -> ItemRow:
    spec = {"engine": engine, "model": model}
    row: ItemRow = item_row(n, state, spec=spec, at=NOW, **values)
    return row


POLICY = SchedulePolicy(engine="dashscope", model="fun-asr", batch_size=10)


class FakeLedger:
    """Records the items planning failed (an unknown model)."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def fail(self, item_id: str, expected: ItemState, failure: Failure) -> bool:
        self.failed.append((item_id, failure.code))
        return True


def scheduler(policy: SchedulePolicy = POLICY) -> tuple[Scheduler, FakeLedger]:
    ledger = FakeLedger()
    return Scheduler(policy, ledger), ledger  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "mode", "action"),
    [
        (ItemState.PENDING, Mode.ASYNC, Action.PREPARE),
        (ItemState.PREPARED, Mode.ASYNC, Action.SUBMIT),
        (ItemState.PREPARED, Mode.CLIP, Action.TRANSCRIBE),
        (ItemState.SUBMITTING, Mode.ASYNC, Action.RECONCILE),
        (ItemState.SUBMITTED, Mode.ASYNC, Action.POLL),
        (ItemState.PREPARING, Mode.ASYNC, None),  # claimed: its step is at work
        (ItemState.PERSISTING, Mode.ASYNC, None),
        (ItemState.SUCCEEDED, Mode.ASYNC, None),
        (ItemState.FAILED, Mode.CLIP, None),
    ],
)
def test_action_for_each_state(state: ItemState, mode: Mode, action: Action | None) -> None:
    """Each state calls for one step (or none), clip engines transcribing in place."""
    assert action_for(row(state=state), mode) is action


def test_next_action_waits_for_next_run_at_and_a_submitters_lease() -> None:
    """A row is due at its next_run_at; a SUBMITTING one once its lease ran out."""
    later = NOW + timedelta(seconds=5)
    assert next_action(row(next_run_at=later), Mode.ASYNC, NOW) is None
    assert next_action(row(next_run_at=later), Mode.ASYNC, later) is Action.PREPARE
    held = row(state=ItemState.SUBMITTING, lease_until=later, next_run_at=None)
    assert due_from(held) == later
    assert next_action(held, Mode.ASYNC, NOW) is None
    assert next_action(held, Mode.ASYNC, later) is Action.RECONCILE
    assert after_prepare(Mode.CLIP) is Action.TRANSCRIBE


def test_queues_and_pools_follow_one_table() -> None:
    """Provider steps share one queue (the embedded io pool); media and models the others."""
    assert {a for a in Action if queue_for(a) == "provider"} == {
        Action.SUBMIT,
        Action.POLL,
        Action.RECONCILE,
    }
    assert set(lanes_on("provider")) == {Lane.RECONCILE, Lane.POLL, Lane.SUBMIT}
    assert set(lanes_on("prepare", "transcribe")) == {Lane.PREPARE, Lane.TRANSCRIBE}


@pytest.mark.parametrize(
    ("engine", "model", "size"),
    [
        ("dashscope", "fun-asr", 10),  # the configured batch size
        ("dashscope", "paraformer-v2", 10),
        ("dashscope", "qwen3-asr-flash-filetrans", 1),  # one file_url per task
        ("dashscope", "qwen3-asr-flash", 1),
        ("local", "tiny.en", 1),
        ("dashscope", "no-such-model", 1),  # fails at planning; never submitted
    ],
)
def test_batch_size_comes_from_the_catalog(engine: str, model: str, size: int) -> None:
    """Files per submission: the setting, capped by what the model takes."""
    assert POLICY.batch_size_of(row(model=model, engine=engine)) == size
    big = replace(POLICY, batch_size=500)
    assert big.batch_size_of(row(model="fun-asr")) == 100  # Fun-ASR's own limit
    assert replace(POLICY, batch_size=1).batch_size_of(row(model="fun-asr")) == 1


def test_hand_offs() -> None:
    """A worker queues what is due within the horizon itself, except Fun-ASR submissions,
    which wait for the sweeper to gather a batch."""
    filetrans = row(model="qwen3-asr-flash-filetrans", state=ItemState.PREPARED)
    funasr = row(model="fun-asr", state=ItemState.PREPARED)
    assert POLICY.hands_off(filetrans, Action.SUBMIT, 0.0)
    assert not POLICY.hands_off(funasr, Action.SUBMIT, 0.0)
    assert POLICY.left_to_sweeper(funasr) and not POLICY.left_to_sweeper(filetrans)
    assert replace(POLICY, batch_size=1).hands_off(funasr, Action.SUBMIT, 0.0)
    polled = replace(funasr, state=ItemState.SUBMITTED)
    assert POLICY.hands_off(polled, Action.POLL, COUNTDOWN_MAX_S)
    assert not POLICY.hands_off(polled, Action.POLL, COUNTDOWN_MAX_S + 1)
    assert redispatch_slack(Action.POLL, 300.0) == POLL_SLACK_S
    assert redispatch_slack(Action.SUBMIT, 300.0) == 300.0


def test_follow_ups_send_what_is_due_soon_with_its_countdown() -> None:
    """After a step a worker queues each due job with the wait until it falls due; Fun-ASR
    submissions and anything past the horizon are left to the sweeper."""
    sched, _ = scheduler()
    rows = [
        row(1, ItemState.PENDING, next_run_at=NOW + timedelta(seconds=20)),
        row(2, ItemState.PREPARED, model="qwen3-asr-flash-filetrans"),
        row(3, ItemState.PREPARED, model="fun-asr"),
        row(4, ItemState.SUBMITTED, provider_task_id="t", next_run_at=NOW + timedelta(hours=1)),
        row(5, ItemState.SUCCEEDED),
    ]
    sent = [(j.action, j.ids, c) for j, c in sched.follow_ups(rows, NOW)]
    assert sent == [(Action.SUBMIT, ("id2",), 0.0), (Action.PREPARE, ("id1",), 20.0)]
    assert sched.follow_ups([row(5, ItemState.SUCCEEDED)], NOW) == []


def test_an_unknown_model_fails_its_item_at_planning() -> None:
    """Planning a row whose model the catalog does not know fails it (and only it)."""
    sched, ledger = scheduler()
    jobs = sched.plan(
        [row(1, ItemState.PREPARED, model="no-such-model"), row(2, ItemState.PREPARED)],
        NOW,
        prepare_room=9,
        submit_room=9,
    )
    assert ledger.failed == [("id1", FailureCode.CONFIG_INVALID.value)]
    assert [(j.action, j.ids) for j in jobs] == [
        (Action.TRANSCRIBE, ("id1",)),  # as a clip: its step fails it again, harmlessly
        (Action.SUBMIT, ("id2",)),
    ]


def test_the_agenda_batches_submissions_by_the_catalog() -> None:
    """The embedded planner groups Fun-ASR files up to the batch size, one per filetrans."""
    sched, _ = scheduler(replace(POLICY, batch_size=2))
    agenda = sched.agenda()
    for n in range(1, 4):
        agenda.put(row(n, ItemState.PREPARED, model="fun-asr"))
    for n in range(4, 6):
        agenda.put(row(n, ItemState.PREPARED, model="qwen3-asr-flash-filetrans"))
    jobs = agenda.take(NOW, prepare_room=0)
    assert [j.ids for j in jobs] == [("id1", "id2"), ("id3",), ("id4",), ("id5",)]


def test_countdown_and_embedded_backpressure() -> None:
    """A job waits for its earliest row; the embedded runner prepares two per worker."""
    rows = (row(1, next_run_at=NOW + timedelta(seconds=3)), row(2, next_run_at=None))
    assert countdown_s(Job(Action.PREPARE, ("id1",), rows=rows[:1]), NOW) == 3.0
    assert countdown_s(Job(Action.PREPARE, ("id1", "id2"), rows=rows), NOW) == 3.0
    assert countdown_s(Job(Action.PREPARE, ("id2",), rows=rows[1:]), NOW) == 0.0
    assert embedded_prepare_room(4, 3) == 5


def sqlite_scheduler(tmp_path: Any, n: int) -> tuple[Scheduler, Any, list[ItemRow]]:
    """A Scheduler over a real SQLite ledger holding ``n`` PENDING Fun-ASR items."""
    from pipeline.ledger import ItemSeed, open_ledger, sqlite_url

    ledger = open_ledger(sqlite_url(tmp_path / "l.db"))
    ledger.ensure_batch("b", kind="run", out=str(tmp_path), engine="dashscope", model="fun-asr")
    seeds = [
        ItemSeed(f"k{i}", i, f"/a/{i}.wav", {"engine": "dashscope", "model": "fun-asr"}, "f")
        for i in range(n)
    ]
    ledger.sync_items("b", seeds, engine="dashscope", model="fun-asr")
    return Scheduler(POLICY, ledger), ledger, ledger.list_items("b")


def test_the_sweep_prepares_only_within_the_room_left(tmp_path: Any) -> None:
    """Two of five items already hold normalized audio; with room for three, the sweep
    prepares one more, and none once the room is spent."""
    from support import walk

    sched, ledger, rows = sqlite_scheduler(tmp_path, 5)
    for r in rows[:2]:
        assert walk(ledger, r.id, ItemState.PREPARED, next_run_at=NOW + timedelta(hours=1))
    pending = [r for r in ledger.list_items("b") if r.state is ItemState.PENDING]
    jobs = sched.sweep(pending, NOW, max_prepared=3, max_inflight=9)
    assert [(j.action, len(j.ids)) for j in jobs] == [(Action.PREPARE, 1)]
    assert sched.sweep(pending, NOW, max_prepared=2, max_inflight=9) == []


def test_queued_steps_are_marked_with_their_message_slack(tmp_path: Any) -> None:
    """A queued poll is due again after its countdown and the short poll slack; any other
    step after the countdown and the whole redispatch slack."""
    from support import walk

    from pipeline.flow.actions import POLL_SLACK_S

    sched, ledger, rows = sqlite_scheduler(tmp_path, 2)
    assert walk(ledger, rows[0].id, ItemState.SUBMITTED)
    fresh = ledger.list_items("b")
    sched.mark_queued(fresh, countdown_s=5.0, redispatch_s=600.0, now=NOW)
    due = {r.key: r.next_run_at for r in ledger.list_items("b")}
    assert due["k0"] == NOW + timedelta(seconds=5.0 + min(600.0, POLL_SLACK_S))
    assert due["k1"] == NOW + timedelta(seconds=605.0)
