"""Keyset pagination and batch counts on a million-item batch in PostgreSQL.

The batch is seeded straight into a fresh database (bench/console_bench.py's INSERT ...
SELECT generate_series); the bound is generous (the machine is shared); the measured
figures are in bench/console_bench.py's table in the README."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from console_bench import measure, seed
from support import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOUND_MS = 1000.0


def test_million_items() -> None:
    """A page of items (first, deep by cursor, by state, by code) and the batch's counts
    each answer within the bound; the cursor walks forward in manifest order."""
    from pipeline.console.queries import ItemFilter, items_page

    with scratch_database("bulkscribe_console_test") as url:
        ledger, _ = seed(url, 1_000_000)
        try:
            first, cursor = items_page(ledger, "big", ItemFilter(limit=50))
            second, _ = items_page(ledger, "big", ItemFilter(limit=50, after=cursor))
            assert [i["line"] for i in first] == list(range(1, 51))
            assert [i["line"] for i in second] == list(range(51, 101))
            assert ledger.counts("big")["FAILED"] == 10_000
            timings = measure(ledger)
        finally:
            ledger.engine.dispose()
    slow = {k: v for k, v in timings.items() if "id search" not in k and v > BOUND_MS}
    assert not slow, timings
