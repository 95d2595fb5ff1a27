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

from pipeline.errors import FailureCode, failure_of, is_retryable
from pipeline.flow.context import FlowContext
from pipeline.inputs.manifest import display
from pipeline.ledger import Failure, ItemRow, utcnow
from pipeline.ledger.repo import ItemColumns
from pipeline.log import get_logger
from pipeline.retry import backoff_s
from pipeline.states import CLAIMED_FROM, ItemState

log = get_logger("bulkscribe.flow")


def release(ctx: FlowContext, row: ItemRow, *, to: ItemState | None = None) -> ItemRow:
    """Give back a claim this process holds; returns the row as it now stands."""
    latest = ctx.ledger.get(row.id) or row
    if latest.state.claimed and latest.lease_owner == ctx.owner:
        target = to or CLAIMED_FROM[latest.state]
        if target is ItemState.PREPARED and latest.state is ItemState.PERSISTING:
            # The result expired: the task is done with, and the file is submitted anew
            # (with a fresh URL: the one it was given may have expired as well).
            ctx.ledger.move(
                row.id, latest.state, target, owner=ctx.owner, provider_task_id=None, media_url=None
            )
        else:
            ctx.ledger.move(row.id, latest.state, target, owner=ctx.owner)
        latest = ctx.ledger.get(row.id) or latest
    return latest


def handle_failure(
    ctx: FlowContext, row: ItemRow, exc: BaseException, *, back_to: ItemState | None = None
) -> None:
    if _fail_from_claim(ctx, row, exc):
        return
    latest = release(ctx, row, to=back_to)
    if ctx.stop.is_set() or latest.state.terminal:
        return
    code, message = failure_of(exc)
    message = _naming_file(latest, message)
    retryable = is_retryable(exc)
    retry_after = getattr(exc, "retry_after_s", None)
    if retryable and code == FailureCode.PROVIDER_THROTTLED:
        throttled = _throttled_in_a_row(latest) + 1
        if throttled <= ctx.rules.retry.max_throttled:
            delay = backoff_s(throttled - 1, ctx.rules.retry, retry_after_s=retry_after)
            _retry_later(
                ctx,
                latest,
                back_to,
                delay,
                Failure(str(code), message, True, {"throttled": throttled}),
            )
            log.info(
                "item.throttled",
                item_id=latest.key,
                error=message,
                throttled=throttled,
                delay_s=round(delay, 2),
            )
            ctx.emit("item.retry", code=str(code))
            return
    elif retryable and latest.tries + 1 < ctx.rules.retry.max_attempts:
        delay = backoff_s(latest.tries, ctx.rules.retry, retry_after_s=retry_after)
        _retry_later(
            ctx,
            latest,
            back_to,
            delay,
            Failure(str(code), message, True),
            tries=latest.tries + 1,
        )
        log.info(
            "item.retry",
            item_id=latest.key,
            code=str(code),
            error=message,
            tries=latest.tries + 1,
            delay_s=round(delay, 2),
        )
        ctx.emit("item.retry", code=str(code))
        return
    _fail(ctx, latest, exc)


def _fail_from_claim(ctx: FlowContext, row: ItemRow, exc: BaseException) -> bool:
    """A permanent error on an item this process holds: claimed straight to FAILED, in one
    transition guarded by the claim (no give-back first). False when that does not apply
    (retryable, interrupted, or the claim was lost): the general path then decides."""
    if (
        is_retryable(exc)
        or ctx.stop.is_set()
        or not row.state.claimed
        or row.lease_owner != ctx.owner
    ):
        return False
    return _fail(ctx, row, exc, owner=ctx.owner)


def _fail(
    ctx: FlowContext, latest: ItemRow, exc: BaseException, *, owner: str | None = None
) -> bool:
    code, message = failure_of(exc)
    message = _naming_file(latest, message)
    failure = Failure.of(exc, message=message)
    dead = failure.retryable and ctx.rules.dead_letters
    if not ctx.ledger.fail(latest.id, latest.state, failure, dead=dead, owner=owner):
        return False
    if not hasattr(exc, "code"):
        log.error("item.crashed", item_id=latest.key, error=message, exc_info=exc)
    log.info(
        "item.dead" if dead else "item.failed", item_id=latest.key, code=str(code), error=message
    )
    ctx.emit("item.dead" if dead else "item.failed", code=str(code))
    ctx.item_finished(latest.batch_id)
    return True


def _naming_file(row: ItemRow, message: str) -> str:
    label = display(row.request.source or row.source)
    if label and label not in message:
        return f"{label}: {message}"  # every failure names its file
    return message


def _retry_later(
    ctx: FlowContext,
    latest: ItemRow,
    back_to: ItemState | None,
    delay_s: float,
    failure: Failure,
    tries: int | None = None,
) -> None:
    values: ItemColumns = {"failure": failure, "next_run_at": utcnow() + timedelta(seconds=delay_s)}
    if tries is not None:
        values["tries"] = tries
    if back_to is not None and latest.state is not back_to:
        # e.g. a lost provider task: SUBMITTED goes back to PREPARED to be submitted anew.
        values["provider_task_id"] = values["media_url"] = None
        ctx.ledger.move(latest.id, latest.state, back_to, **values)
    else:
        ctx.ledger.update_if(latest.id, latest.state, **values)


def _throttled_in_a_row(row: ItemRow) -> int:
    """How many 429s this item has waited out since anything else happened to it."""
    if row.error_code != FailureCode.PROVIDER_THROTTLED.value:
        return 0
    return int(dict(row.error_detail or {}).get("throttled", 0))
