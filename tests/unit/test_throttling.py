"""A 429 is the provider asking everyone to slow down: items wait it out without spending the
tries their own faults get, up to ``retry.max_throttled`` in a row (real SQLite ledger)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import bare_flow

from pipeline.errors import FailureCode, ProviderBusy, ProviderUnavailable
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.ledger import ItemSeed, Ledger, open_ledger, sqlite_url, utcnow
from pipeline.settings import RetrySettings
from pipeline.states import ItemState

RETRY = RetrySettings(max_attempts=3, backoff_base_s=2.0, backoff_max_s=300.0, max_throttled=5)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
    led.ensure_batch("b", kind="run", out=str(tmp_path), engine="dashscope", model="fun-asr")
    led.sync_items(
        "b",
        [ItemSeed("k", 1, "/a.wav", {"source": "/a.wav"}, "f")],
        engine="dashscope",
        model="fun-asr",
    )
    return led


def context(ledger: Ledger, *, dead_letters: bool) -> FlowContext:
    return bare_flow(ledger=ledger, retry=RETRY, dead_letters=dead_letters)


def throttled() -> ProviderBusy:
    return ProviderBusy(
        FailureCode.PROVIDER_THROTTLED, "429 Throttling.RateQuota", retry_after_s=None
    )


def submit_fails(ctx: FlowContext, exc: Exception) -> Any:
    """A submission that raised: the item is claimed PREPARED → SUBMITTING, then handled."""
    (item,) = ctx.ledger.list_items("b")
    if item.state is ItemState.PENDING:  # prepared (PENDING → PREPARING → PREPARED)
        ctx.ledger.move(item.id, ItemState.PENDING, ItemState.PREPARING)
        ctx.ledger.move(item.id, ItemState.PREPARING, ItemState.PREPARED)
        item = ctx.ledger.get(item.id)
    assert item is not None and item.state is ItemState.PREPARED, item
    claimed = ctx.ledger.claim(
        item.id, ItemState.PREPARED, ItemState.SUBMITTING, owner=ctx.owner, lease_s=60
    )
    assert claimed is not None
    handle_failure(ctx, claimed, exc, back_to=ItemState.PREPARED)
    return ctx.ledger.get(item.id)


def test_throttles_do_not_spend_tries_and_back_off_exponentially(ledger: Ledger) -> None:
    ctx = context(ledger, dead_letters=True)
    waits = []
    for n in range(1, RETRY.max_throttled + 1):  # more 429s in a row than max_attempts
        before = utcnow()
        row = submit_fails(ctx, throttled())
        assert row.state is ItemState.PREPARED and row.tries == 0
        assert row.error_code == "provider_throttled"
        assert row.error_detail == {"throttled": n}
        waits.append((row.next_run_at - before).total_seconds())
    # Full jitter between half and all of 2 s · 2^(n-1): each wait is within its band.
    for n, wait in enumerate(waits):
        assert 0.5 * 2.0 * 2**n - 0.1 <= wait <= 2.0 * 2**n + 0.1, (n, wait)


def test_other_faults_spend_tries_and_reset_the_throttle_count(ledger: Ledger) -> None:
    ctx = context(ledger, dead_letters=True)
    for _ in range(3):
        row = submit_fails(ctx, throttled())
    assert row.error_detail == {"throttled": 3} and row.tries == 0
    row = submit_fails(ctx, ProviderUnavailable(FailureCode.PROVIDER_ERROR, "500 InternalError"))
    assert row.tries == 1 and row.error_code == "provider_error"
    row = submit_fails(ctx, throttled())
    assert row.error_detail == {"throttled": 1} and row.tries == 1  # counting starts again


@pytest.mark.parametrize(
    ("dead_letters", "final"), [(True, ItemState.DEAD), (False, ItemState.FAILED)]
)
def test_too_many_throttles_in_a_row_give_the_item_up(
    ledger: Ledger, dead_letters: bool, final: ItemState
) -> None:
    ctx = context(ledger, dead_letters=dead_letters)
    for _ in range(RETRY.max_throttled):
        assert submit_fails(ctx, throttled()).state is ItemState.PREPARED
    row = submit_fails(ctx, throttled())
    assert row.state is final
    assert row.error_code == "provider_throttled"
    assert "Throttling" in str(row.error_message)
