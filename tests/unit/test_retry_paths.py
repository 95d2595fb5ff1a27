"""The retry-or-fail paths of pipeline.flow.guard on a real SQLite ledger, with the default
retry settings: what each kind of failure leaves in the ledger, retryable flag included."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import bare_flow

from pipeline.errors import FailureCode, MediaRejected, ProviderUnavailable, TransientError
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.ledger import ItemRow, ItemSeed, Ledger, open_ledger, sqlite_url
from pipeline.states import ItemState

S = ItemState


@pytest.fixture
def ctx(tmp_path: Path) -> FlowContext:
    led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
    led.ensure_batch("b", kind="run", out=str(tmp_path), engine="dashscope", model="fun-asr")
    led.sync_items(
        "b",
        [ItemSeed("k", 1, "/a.wav", {"source": "/a.wav"}, "f")],
        engine="dashscope",
        model="fun-asr",
    )
    return bare_flow(ledger=led)


def _submitted(led: Ledger, owner: str) -> ItemRow:
    """The item walked PENDING → … → SUBMITTED, then claimed PERSISTING by ``owner``."""
    (item,) = led.list_items("b")
    for old, new in ((S.PENDING, S.PREPARING), (S.PREPARING, S.PREPARED)):
        assert led.move(item.id, old, new)
    assert led.claim(item.id, S.PREPARED, S.SUBMITTING, owner=owner, lease_s=60)
    assert led.move(item.id, S.SUBMITTING, S.SUBMITTED, owner=owner, provider_task_id="t-1")
    claimed = led.claim(item.id, S.SUBMITTED, S.PERSISTING, owner=owner, lease_s=60)
    assert claimed is not None
    return claimed


def test_an_expired_result_sends_the_item_back_to_be_submitted_again(ctx: FlowContext) -> None:
    """result_expired while persisting: PERSISTING → PREPARED (an allowed transition), the
    task forgotten, one try spent, the failure kept as retryable."""
    claimed = _submitted(ctx.ledger, ctx.owner)
    expired = ProviderUnavailable(FailureCode.RESULT_EXPIRED, "result URL no longer readable")
    handle_failure(ctx, claimed, expired, back_to=S.PREPARED)
    row = ctx.ledger.get(claimed.id)
    assert row is not None
    assert (row.state, row.provider_task_id, row.tries) == (S.PREPARED, None, 1)
    assert row.failure is not None
    assert (row.failure.code, row.failure.retryable) == ("result_expired", True)


@pytest.mark.parametrize("code", [FailureCode.TASK_LOST, FailureCode.POLL_TIMEOUT])
def test_lost_and_stuck_tasks_end_retryable_when_tries_run_out(
    ctx: FlowContext, code: FailureCode
) -> None:
    """Out of tries, a lost or stuck task leaves the item FAILED (embedded) with the flag
    that makes the next run try it again."""
    claimed = _submitted(ctx.ledger, ctx.owner)
    ctx.ledger.update_if(claimed.id, S.PERSISTING, tries=ctx.rules.retry.max_attempts)
    latest = ctx.ledger.get(claimed.id)
    assert latest is not None
    handle_failure(ctx, latest, TransientError(code, "gone"), back_to=S.PREPARED)
    row = ctx.ledger.get(claimed.id)
    assert row is not None and row.state is S.FAILED
    assert row.failure is not None and (row.failure.code, row.failure.retryable) == (code, True)


def test_a_permanent_failure_is_recorded_as_not_retryable(ctx: FlowContext) -> None:
    """A file that is not audio fails at once, from its claim, flagged not retryable."""
    (item,) = ctx.ledger.list_items("b")
    claimed = ctx.ledger.claim(item.id, S.PENDING, S.PREPARING, owner=ctx.owner, lease_s=60)
    assert claimed is not None
    handle_failure(ctx, claimed, MediaRejected(FailureCode.NOT_MEDIA, "a text file"))
    row = ctx.ledger.get(item.id)
    assert row is not None and row.state is S.FAILED
    assert row.failure is not None and row.failure.retryable is False
    assert row.failure.message == "/a.wav: a text file"  # every failure names its file
