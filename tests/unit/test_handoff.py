"""Which next steps a worker queues itself, and the ledger marks that allow for them.

A step whose next step the worker sends at once (a countdown message) writes ``next_run_at``
with ``redispatch_s`` of slack, so the sweeper does not send it a second time; everything
else keeps an exact mark for the sweeper (or the embedded runner) to act on.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import bare_flow, item_row

from pipeline.flow.actions import POLL_SLACK_S, Action
from pipeline.flow.context import FlowContext
from pipeline.flow.policy import COUNTDOWN_MAX_S, SchedulePolicy
from pipeline.ledger import ItemRow
from pipeline.settings import load_settings
from pipeline.states import ItemState


def hands_off(settings: Any, row: ItemRow, next_step: Action, delay_s: float) -> bool:
    return SchedulePolicy.from_settings(settings).hands_off(row, next_step, delay_s)


NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def row(model: str, state: ItemState = ItemState.PREPARING) -> ItemRow:
    # As intake writes it: the engine beside the model (the catalog needs both).
    spec = {
        "source": "/a.wav",
        "engine": "local" if model == "tiny.en" else "dashscope",
        "model": model,
    }
    got: ItemRow = item_row(1, state, spec=spec, at=NOW, id="i1", key="k", source="/a.wav")
    return got


def flow(settings: Any, handoff_s: float) -> FlowContext:
    # Only the hand-off fields matter here; the rest is never touched by due_at.
    return bare_flow(
        handoff_s=handoff_s, hands_off=SchedulePolicy.from_settings(settings).hands_off
    )


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in ("BULKSCRIBE_PROVIDER__BATCH_SIZE", "BULKSCRIBE_MODEL", "BULKSCRIBE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    return load_settings()


def test_prepared_items_are_handed_off_except_funasr_batches(settings: Any) -> None:
    assert hands_off(settings, row("qwen3-asr-flash-filetrans"), Action.SUBMIT, 0.0)
    assert hands_off(settings, row("tiny.en"), Action.TRANSCRIBE, 0.0)
    # Fun-ASR files wait for the sweeper, which puts up to batch_size of them in one task.
    assert settings.provider.batch_size > 1
    assert not hands_off(settings, row("fun-asr"), Action.SUBMIT, 0.0)
    single = settings.model_copy(
        update={"provider": settings.provider.model_copy(update={"batch_size": 1})}
    )
    assert hands_off(single, row("fun-asr"), Action.SUBMIT, 0.0)


def test_polls_are_handed_off_only_within_the_countdown_horizon(settings: Any) -> None:
    submitted = row("fun-asr", ItemState.SUBMITTED)
    assert hands_off(settings, submitted, Action.POLL, 2.0)  # Fun-ASR polls too
    assert hands_off(settings, submitted, Action.POLL, COUNTDOWN_MAX_S)
    assert not hands_off(settings, submitted, Action.POLL, COUNTDOWN_MAX_S + 1)


def test_marks_carry_slack_only_for_what_is_handed_off(settings: Any) -> None:
    ctx = flow(settings, handoff_s=300.0)
    filetrans = row("qwen3-asr-flash-filetrans")
    assert ctx.due_at(filetrans, Action.SUBMIT, 0.0, NOW) == NOW + timedelta(seconds=300)
    assert ctx.due_at(row("fun-asr"), Action.SUBMIT, 0.0, NOW) == NOW  # the sweeper's
    polled = replace(filetrans, state=ItemState.SUBMITTED)
    # A poll's message gets less slack: a worker killed while holding it takes it along.
    assert ctx.due_at(polled, Action.POLL, 5.0, NOW) == NOW + timedelta(seconds=5 + POLL_SLACK_S)
    assert ctx.due_at(polled, Action.POLL, 600.0, NOW) == NOW + timedelta(seconds=600)
    assert ctx.handed_off(polled, Action.POLL, 5.0)
    assert not ctx.handed_off(polled, Action.POLL, 600.0)


def test_embedded_runs_keep_exact_marks(settings: Any) -> None:
    ctx = flow(settings, handoff_s=0.0)  # the embedded runner plans everything itself
    filetrans = row("qwen3-asr-flash-filetrans")
    assert ctx.due_at(filetrans, Action.SUBMIT, 0.0, NOW) == NOW
    assert not ctx.handed_off(filetrans, Action.SUBMIT, 0.0)
