"""The worker's step lines: what a step did to an item, read off its row before and after."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pipeline.ledger import ItemRow
from pipeline.outputs.report import batch_phase
from pipeline.states import ItemState
from workers.steplog import outcome_of

S = ItemState
NOW = datetime(2026, 12, 6, tzinfo=UTC)
ROW = ItemRow(
    "i",
    "b",
    "k",
    1,
    "/a.wav",
    {},
    "f",
    None,
    S.PENDING,
    1,
    0,
    None,
    None,
    None,
    0,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    NOW,
    NOW,
    None,
)


@pytest.mark.parametrize(
    ("before", "after", "outcome"),
    [
        ({}, {"state": S.PREPARED}, "prepared"),
        ({"state": S.PREPARED}, {"state": S.SUBMITTED}, "submitted"),
        ({"state": S.SUBMITTED}, {"state": S.SUCCEEDED}, "succeeded"),
        ({"state": S.SUBMITTED}, {"state": S.SUBMITTED, "polls": 1}, "waiting"),
        ({}, {"state": S.DEAD}, "dead"),
        ({}, {"state": S.FAILED}, "failed"),
        ({}, {"tries": 1, "error_code": "download_timeout"}, "retry"),
        ({"state": S.SUBMITTED}, {"state": S.PREPARED, "error_code": "task_lost"}, "retry"),
        ({}, {"state": S.PREPARING}, "skipped"),  # another worker claimed it
        ({}, {}, "skipped"),
        ({"state": S.SUCCEEDED}, {"state": S.SUCCEEDED}, "skipped"),
    ],
)
def test_outcome_of(before: dict[str, object], after: dict[str, object], outcome: str) -> None:
    """One row per outcome a worker can log."""
    assert outcome_of(replace(ROW, **before), replace(ROW, **after)) == outcome  # type: ignore[arg-type]


def test_outcome_of_a_vanished_row_is_skipped() -> None:
    assert outcome_of(ROW, None) == "skipped"


def test_batch_phase_done_only_with_results_written() -> None:
    """A distributed batch is done when its results are written; an embedded run when its
    items are (it writes results.jsonl before it exits)."""
    assert batch_phase({"kind": "submit", "done_at": None}, False) == "in progress"
    assert batch_phase({"kind": "submit", "done_at": None}, True) == "writing results"
    assert batch_phase({"kind": "submit", "done_at": NOW}, True) == "done"
    assert batch_phase({"kind": "run", "done_at": None}, True) == "done"
