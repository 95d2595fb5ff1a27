"""Operator actions over the ledger: retry, replay, reprocess, purge, cancel.

Shared by the CLI (``retry``, ``reprocess``, ``dlq``, ``cancel``) and the console, so both do
exactly the same thing and both leave the same audit row (``Ledger.record_action``). Each
function changes only what its compare-and-set allows, on the state it read (an item a worker
moved meanwhile is left alone), and returns the ledger ids it changed; queueing the next steps
(distributed mode) is the caller's business: the sweeper finds new PENDING items on its own,
and the next ``bulkscribe run`` does for an embedded directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import FailureCode, PipelineError
from pipeline.inputs.batches import fingerprint
from pipeline.ledger import Failure, ItemRow, Ledger
from pipeline.ledger.repo import ItemColumns, attempt_end
from pipeline.log import get_logger
from pipeline.states import ItemState, can_move, can_start_attempt

log = get_logger("bulkscribe.operations")

RETRYABLE = (ItemState.FAILED, ItemState.DEAD)


def _operable(rows: Iterable[ItemRow]) -> list[ItemRow]:
    # Manifest lines that never became items: nothing to run again.
    return [r for r in rows if not r.is_problem]


def retry_batch(ledger: Ledger, batch_id: str, *, actor: str) -> list[str]:
    """A new attempt for each FAILED and DEAD item of the batch."""
    rows = _operable(ledger.list_items(batch_id, states=RETRYABLE))
    ids = [r.id for r in rows if ledger.restart(r.id, expected=r.state)]
    ledger.record_action(actor, "retry", batch_id, ids)
    return ids


def respec(
    spec: Mapping[str, Any],
    *,
    model: str | None = None,
    engine: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An item's spec with another model, engine or extra provider options."""
    out = dict(spec)
    if model:
        out["model"] = model
    if engine:
        out["engine"] = engine
    if options:
        out["options"] = {**dict(out.get("options") or {}), **options}
    return out


def reprocess(
    ledger: Ledger,
    rows: Sequence[ItemRow],
    *,
    actor: str,
    model: str | None = None,
    engine: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """New attempts for finished items, optionally with another model or options; items
    still in progress are left to finish. Old outputs stay until the new ones are written."""
    restarted: list[str] = []
    for row in _operable(rows):
        if not can_start_attempt(row.state, ItemState.PENDING):
            continue
        spec = respec(row.spec, model=model, engine=engine, options=options)
        if ledger.restart(row.id, expected=row.state, spec=spec, fingerprint=fingerprint(spec)):
            restarted.append(row.id)
    detail = {
        k: v
        for k, v in {"model": model, "engine": engine, "options": dict(options or {})}.items()
        if v
    }
    _record_by_batch(ledger, actor, "reprocess", rows, restarted, detail)
    return restarted


def replay(ledger: Ledger, rows: Sequence[ItemRow], *, actor: str) -> list[str]:
    """Dead items get a new attempt; rows in any other state are left alone."""
    ids = [
        r.id
        for r in _operable(rows)
        if r.state is ItemState.DEAD and ledger.restart(r.id, expected=ItemState.DEAD)
    ]
    _record_by_batch(ledger, actor, "replay", rows, ids)
    return ids


def purge(ledger: Ledger, rows: Sequence[ItemRow], *, actor: str) -> list[str]:
    """Dead items leave the dead-letter set for good: FAILED, their error kept."""
    purged = []
    for row in rows:
        if row.state is not ItemState.DEAD:
            continue
        # The failure is kept as recorded (retryable), its message saying it was purged.
        kept: ItemColumns = {}
        if row.failure is not None:
            message = f"{row.failure.message} (purged from the dead-letter set)"
            kept["failure"] = replace(row.failure, message=message)
        if ledger.move(row.id, ItemState.DEAD, ItemState.FAILED, **kept):
            purged.append(row.id)
            # Reopen the batch: its results.jsonl still says DEAD, and only the sweeper
            # writes it, for batches not marked done.
            ledger.mark_batch_done(row.batch_id, False)
    _record_by_batch(ledger, actor, "purge", rows, purged)
    return purged


@dataclass(frozen=True, slots=True)
class CancelReport:
    cancelled: tuple[str, ...]  # ledger ids now CANCELLED
    tasks_cancelled: tuple[str, ...]  # provider tasks the provider agreed to cancel
    tasks_running: tuple[str, ...]  # provider tasks it would not cancel (already running)

    def as_json(self, batch_id: str) -> dict[str, Any]:
        return {
            "batch_id": batch_id,
            "cancelled": len(self.cancelled),
            "tasks_cancelled": list(self.tasks_cancelled),
            "tasks_running": list(self.tasks_running),
        }


def cancel_batch(
    ledger: Ledger, batch_id: str, *, actor: str, cancel_task: Callable[[str], None] | None = None
) -> CancelReport:
    """Every unfinished item of the batch ends CANCELLED, claimed or not.

    The compare-and-set of a worker still holding a claim then fails, so its step's result
    is discarded; no step claims a CANCELLED item. Then the provider tasks that only
    cancelled items were waiting for are cancelled with ``cancel_task`` (DashScope cancels
    only tasks still queued; a running one finishes and its result is not fetched).
    """
    message = f"cancelled by {actor}"
    cancelled: list[str] = []
    tasks: set[str] = set()
    for row in _operable(ledger.list_items(batch_id)):
        current: ItemRow | None = row
        for _ in range(5):  # a worker may move it between our read and our write
            if current is None or current.state.terminal:
                break
            state = current.state
            if current.provider_task_id:
                tasks.add(current.provider_task_id)
            if not can_move(state, ItemState.CANCELLED):
                break
            failure = Failure.permanent(FailureCode.CANCELLED, message)
            if ledger.move(
                current.id,
                state,
                ItemState.CANCELLED,
                failure=failure,
                attempt=attempt_end(ItemState.CANCELLED, failure),
            ):
                cancelled.append(current.id)
                break
            current = ledger.get(current.id)
    done, running = [], []
    for task_id in sorted(tasks):
        if cancel_task is None or any(
            r.state is not ItemState.CANCELLED for r in ledger.by_task(task_id)
        ):
            continue  # a Fun-ASR task shared with items of another batch keeps running
        try:
            cancel_task(task_id)
            done.append(task_id)
        except PipelineError as exc:
            log.info("cancel.task_running", task_id=task_id, message=exc.message)
            running.append(task_id)
    ledger.mark_batch_done(batch_id, False)  # results.jsonl must say CANCELLED
    ledger.record_action(
        actor, "cancel", batch_id, cancelled, tasks_cancelled=done, tasks_running=running
    )
    return CancelReport(tuple(cancelled), tuple(done), tuple(running))


def _record_by_batch(
    ledger: Ledger,
    actor: str,
    action: str,
    rows: Sequence[ItemRow],
    changed: Sequence[str],
    detail: Mapping[str, Any] | None = None,
) -> None:
    by_batch: dict[str, list[str]] = {r.batch_id: [] for r in rows}
    changed_set = set(changed)
    for row in rows:
        if row.id in changed_set:
            by_batch[row.batch_id].append(row.id)
    for batch_id, ids in by_batch.items():
        ledger.record_action(actor, action, batch_id, ids, **dict(detail or {}))
