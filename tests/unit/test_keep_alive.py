"""Unit tests for pipeline.flow.claims.keep_alive: one thread renews every claim held in the
process, each every third of its lease, and stops once the step is over (real SQLite)."""

from __future__ import annotations

import time
from pathlib import Path

from support import bare_flow

from pipeline.flow.claims import keep_alive
from pipeline.ledger import ItemSeed, open_ledger, sqlite_url, utcnow
from pipeline.states import ItemState


def test_claims_are_renewed_while_held_and_not_after(tmp_path: Path) -> None:
    """Two overlapping steps with 0.6 s and 1.2 s leases keep them alive for over two seconds;
    once the steps end, their leases are left to run out."""
    ledger = open_ledger(sqlite_url(tmp_path / "l.db"))
    ledger.ensure_batch("b", kind="run", out=str(tmp_path), engine="local", model="tiny.en")
    ledger.sync_items(
        "b",
        [ItemSeed(k, n, f"/a/{k}.wav", {}, "f") for n, k in enumerate("xy")],
        engine="local",
        model="tiny.en",
    )
    rows = {r.key: r for r in ledger.list_items("b")}
    short, long = bare_flow(ledger=ledger, lease_s=0.6), bare_flow(ledger=ledger, lease_s=1.2)
    x = ledger.claim(rows["x"].id, ItemState.PENDING, ItemState.PREPARING, owner="me", lease_s=0.6)
    y = ledger.claim(rows["y"].id, ItemState.PENDING, ItemState.PREPARING, owner="me", lease_s=1.2)
    assert x is not None and y is not None
    with keep_alive(short, x), keep_alive(long, y):
        time.sleep(2.4)  # both leases would have run out twice over unrenewed
        now = utcnow()
        assert all(r.lease_until > now for r in ledger.list_items("b"))
    time.sleep(0.5)  # a renewal already under way when the steps ended may still land
    ended = {r.key: r.lease_until for r in ledger.list_items("b")}
    time.sleep(1.0)
    assert {r.key: r.lease_until for r in ledger.list_items("b")} == ended
