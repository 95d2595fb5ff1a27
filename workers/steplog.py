"""One JSON line per step of an item on the worker's stderr (info level):

    {"event": "step", "item_id": "f003", "batch_id": "b-…", "stage": "prepare",
     "duration_s": 0.412, "outcome": "prepared", ...}

The outcome is read off the item's ledger row before and after the step (``outcome_of``,
pure); a step that says how it went (``known``) spares that read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from pipeline.ledger import ItemRow
from pipeline.log import get_logger
from pipeline.states import ItemState

log = get_logger("bulkscribe.worker")

_ORDER = {
    ItemState.PENDING: 0,
    ItemState.PREPARING: 1,
    ItemState.PREPARED: 2,
    ItemState.TRANSCRIBING: 3,
    ItemState.SUBMITTING: 3,
    ItemState.SUBMITTED: 4,
    ItemState.PERSISTING: 5,
}


def outcome_of(before: ItemRow, after: ItemRow | None) -> str:
    """What a step did to an item: succeeded/failed/dead, prepared, submitted, waiting (a
    poll found the task running), retry (back off and try again), or skipped (another
    worker had it, or it was already past this step)."""
    if after is None:
        return "skipped"
    if after.state.terminal:
        return "skipped" if before.state.terminal else after.state.value.lower()
    if after.attempt != before.attempt:
        return "skipped"
    if after.state.claimed:
        return "skipped"  # another worker holds it now
    forward = _ORDER.get(after.state, 0) > _ORDER.get(before.state, 0)
    if forward:
        return {ItemState.PREPARED: "prepared", ItemState.SUBMITTED: "submitted"}.get(
            after.state, after.state.value.lower()
        )
    if after.error_code and (
        after.tries > before.tries
        or after.error_code != before.error_code
        or after.error_detail != before.error_detail
        or after.state is not before.state
    ):
        return "retry"
    if after.state is ItemState.SUBMITTED and after.polls != before.polls:
        return "waiting"
    return "skipped"


def outcomes(before: Sequence[ItemRow], after: Sequence[ItemRow]) -> dict[str, str]:
    """``outcome_of`` for each row of ``before``, given rows read after the step."""
    fresh = {r.id: r for r in after}
    return {r.id: outcome_of(r, fresh.get(r.id)) for r in before}


def enabled() -> bool:
    return logging.getLogger("bulkscribe.worker").isEnabledFor(logging.INFO)


@contextmanager
def step_log(
    stage: str, rows: Sequence[ItemRow], read: Callable[[Sequence[str]], Sequence[ItemRow]]
) -> Iterator[dict[str, str]]:
    """Time the step; at its end log one line per item. The step may fill the yielded dict
    (item id → outcome) with what it knows; the rest is read back from the ledger."""
    known: dict[str, str] = {}
    t0 = time.monotonic()
    try:
        yield known
    except BaseException as exc:
        _emit(
            stage,
            rows,
            {r.id: "error" for r in rows},
            time.monotonic() - t0,
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    seconds = time.monotonic() - t0
    if not rows or not enabled():
        return
    missing = [r for r in rows if r.id not in known]
    if missing:
        known.update(outcomes(missing, read([r.id for r in missing])))
    _emit(stage, rows, known, seconds)


def _emit(
    stage: str, rows: Sequence[ItemRow], outcomes: Mapping[str, str], seconds: float, **extra: str
) -> None:
    for row in rows:
        log.info(
            "step",
            item_id=row.key,
            batch_id=row.batch_id,
            stage=stage,
            duration_s=round(seconds, 3),
            outcome=outcomes.get(row.id, "skipped"),
            attempt=row.attempt,
            **extra,
        )
