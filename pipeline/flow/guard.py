"""What happens to an item when a step raises: the one place retry-or-fail is applied.

Transient errors put the item back where its claim came from with ``next_run_at`` pushed
out by exponential backoff; once retries run out it is FAILED (embedded) or DEAD
(distributed, the dead-letter set). Throttling (429) is the provider asking everyone to slow
down, not a fault of the item: it backs off the same way without spending the item's tries,
up to ``retry.max_throttled`` times in a row. Permanent errors fail it at once. An
interrupted run (Ctrl-C) only gives its claims back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline.errors import FailureCode, failure_of, is_retryable
from pipeline.flow.context import FlowContext
from pipeline.ledger import ItemRow, utcnow
from pipeline.log import get_logger
from pipeline.manifest import display
from pipeline.retry import backoff_s
from pipeline.states import CLAIMED_FROM, ItemState

log = get_logger("bulkscribe.flow")


def release(ctx: FlowContext, row: ItemRow, *, to: ItemState | None = None) -> ItemRow:
    """Give back a claim this process holds; returns the row as it now stands."""
    latest = ctx.ledger.get(row.id) or row
    if latest.state.claimed and latest.lease_owner == ctx.owner:
        target = to or CLAIMED_FROM[latest.state]
        ctx.ledger.move(row.id, latest.state, target, owner=ctx.owner)
        latest = ctx.ledger.get(row.id) or latest
    return latest


def handle_failure(ctx: FlowContext, row: ItemRow, exc: BaseException, *,
                   back_to: ItemState | None = None) -> None:
    latest = release(ctx, row, to=back_to)
    if ctx.stop.is_set() or latest.state.terminal:
        return
    code, message = failure_of(exc)
    label = display(str(latest.spec.get("source") or latest.source))
    if label and label not in message:
        message = f"{label}: {message}"  # every failure names its file
    retryable = is_retryable(exc)
    detail = dict(getattr(exc, "detail", {}) or {})
    retry_after = getattr(exc, "retry_after_s", None)
    if retryable and code == FailureCode.PROVIDER_THROTTLED:
        throttled = _throttled_in_a_row(latest) + 1
        if throttled <= ctx.retry.max_throttled:
            delay = backoff_s(throttled - 1, ctx.retry, retry_after_s=retry_after)
            _retry_later(ctx, latest, back_to, delay, error_code=str(code),
                         error_message=message, error_detail={"throttled": throttled})
            log.info("item.throttled", item_id=latest.key, error=message,
                     throttled=throttled, delay_s=round(delay, 2))
            ctx.emit("item.retry", code=str(code))
            return
    elif retryable and latest.tries + 1 < ctx.retry.max_attempts:
        delay = backoff_s(latest.tries, ctx.retry, retry_after_s=retry_after)
        _retry_later(ctx, latest, back_to, delay, tries=latest.tries + 1,
                     error_code=str(code), error_message=message)
        log.info("item.retry", item_id=latest.key, code=str(code), error=message,
                 tries=latest.tries + 1, delay_s=round(delay, 2))
        ctx.emit("item.retry", code=str(code))
        return
    if not hasattr(exc, "code"):
        log.error("item.crashed", item_id=latest.key, error=message, exc_info=exc)
    dead = retryable and ctx.dead_letters
    failed = ctx.ledger.fail(row.id, latest.state, code, message, dead=dead,
                             detail=detail or None)
    log.info("item.dead" if dead else "item.failed", item_id=latest.key, code=str(code),
             error=message)
    ctx.emit("item.dead" if dead else "item.failed", code=str(code))
    if failed:
        ctx.item_finished(latest.batch_id)


def _retry_later(ctx: FlowContext, latest: ItemRow, back_to: ItemState | None, delay_s: float,
                 **values: Any) -> None:
    values["next_run_at"] = utcnow() + timedelta(seconds=delay_s)
    if back_to is not None and latest.state is not back_to:
        # e.g. a lost provider task: SUBMITTED goes back to PREPARED to be submitted anew.
        ctx.ledger.move(latest.id, latest.state, back_to, provider_task_id=None,
                        media_url=None, **values)
    else:
        ctx.ledger.update_if(latest.id, latest.state, **values)


def _throttled_in_a_row(row: ItemRow) -> int:
    """How many 429s this item has waited out since anything else happened to it."""
    if row.error_code != FailureCode.PROVIDER_THROTTLED.value:
        return 0
    return int(dict(row.error_detail or {}).get("throttled", 0))
