"""How jobs travel as messages (workers.dispatch.packs, in_step): pure functions, no broker."""

from __future__ import annotations

import pytest

from pipeline.flow.actions import Action
from pipeline.flow.plan import Job
from workers.dispatch import SPREAD, in_step, packs
from workers.tasks import _groups


def polls(n: int) -> list[Job]:
    return [Job(Action.POLL, (f"i{k}",), task_id=f"t{k}") for k in range(n)]


def test_a_large_burst_is_packed_to_the_limit_evenly() -> None:
    """1,000 submissions at ten per message: 100 messages of ten, every job once, in order."""
    jobs = [Job(Action.SUBMIT, (f"i{k}",)) for k in range(1000)]
    out = packs(jobs, 10)
    assert [len(p) for p in out] == [10] * 100
    assert [j for p in out for j in p] == jobs


@pytest.mark.parametrize(
    ("n", "sizes"), [(1, [1]), (8, [1] * 8), (40, [3] * 8 + [2] * 8), (165, [10] * 12 + [9] * 5)]
)
def test_a_small_burst_still_spreads_over_many_messages(n: int, sizes: list[int]) -> None:
    """Fewer jobs than SPREAD × the limit: at least SPREAD messages (or one per job), so a
    few dozen files still run on as many workers as before."""
    out = packs(polls(n), 10)
    assert [len(p) for p in out] == sizes
    assert len(out) >= min(n, SPREAD)


def test_steps_that_take_no_packs_and_a_limit_of_one_travel_alone() -> None:
    prepares = [Job(Action.PREPARE, (f"i{k}",)) for k in range(30)]
    assert [len(p) for p in packs(prepares, 10)] == [1] * 30
    assert [len(p) for p in packs(polls(30), 1)] == [1] * 30


def test_jobs_due_together_share_a_message_sent_at_the_earliest() -> None:
    """Polls due within a tenth (at least 0.5 s) of the earliest go in one message at that
    earliest: none is late. Later ones start a message of their own."""
    jobs = polls(5)
    timed = [(jobs[0], 2.0), (jobs[1], 2.4), (jobs[2], 10.0), (jobs[3], 10.9), (jobs[4], 11.5)]
    out = in_step(timed, 10)
    assert [([j.task_id for j in pack], at) for pack, at in out] == [
        (["t0", "t1"], 2.0),
        (["t2", "t3"], 10.0),
        (["t4"], 11.5),
    ]
    for pack, at in out:  # never after a job's own countdown
        assert all(at <= dict((j.task_id, c) for j, c in timed)[j.task_id] for j in pack)


def test_steps_that_take_no_packs_keep_their_own_countdowns() -> None:
    a, b = Job(Action.PREPARE, ("a",)), Job(Action.PREPARE, ("b",))
    assert in_step([(a, 1.0), (b, 1.2)], 10) == [([a], 1.0), ([b], 1.2)]


def test_a_submit_message_of_either_shape() -> None:
    """Old messages carry one group of ids, packed ones a list of groups."""
    assert _groups(["a", "b"]) == [["a", "b"]]
    assert _groups([["a"], ["b", "c"]]) == [["a"], ["b", "c"]]
    assert _groups([]) == [[]]


def test_at_the_cap_a_prepared_item_waits_for_room_without_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prepared item's submission is not handed off while the in-flight gate is full (it
    would only be refused): the item is marked due as a refused one is, and the next task
    to end hands it room. Below the cap it is sent at once."""
    from types import SimpleNamespace
    from typing import Any

    import workers.dispatch as dispatch
    from pipeline.states import ItemState

    sent: list[Job] = []
    marked: list[tuple[list[str], Any]] = []
    monkeypatch.setattr(dispatch, "send", lambda wctx, job, **kw: sent.append(job))
    full = {"now": True}
    wctx: Any = SimpleNamespace(
        scheduler=SimpleNamespace(after_prepare=lambda row: Action.SUBMIT),
        flow=SimpleNamespace(handed_off=lambda row, action, delay: True),
        gate=SimpleNamespace(full=lambda: full["now"]),
        ledger=SimpleNamespace(mark_due=lambda rows, at: marked.append(([r.id for r in rows], at))),
        settings=SimpleNamespace(poll=SimpleNamespace(first_s=2.0)),
    )
    row: Any = SimpleNamespace(id="i1", state=ItemState.PREPARED)
    assert dispatch.hand_off(wctx, row) is True
    assert sent == [] and [ids for ids, _ in marked] == [["i1"]]
    full["now"] = False
    assert dispatch.hand_off(wctx, row) is True
    assert [job.ids for job in sent] == [("i1",)]
