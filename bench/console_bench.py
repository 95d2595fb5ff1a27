"""Console reads on a million-item batch in PostgreSQL: item pages and batch counts.

Seeds one batch of N items straight into a fresh database (INSERT ... SELECT
generate_series: seconds, not minutes), then times what the batch page and the API ask:
the first page, a page deep in the batch (by cursor), pages filtered by state, by error
code and by id substring, and the batch's counts. Usage:

    python bench/console_bench.py [N]        # default 1,000,000; prints a Markdown table
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import scratch_database

SEED = """
INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state, attempt,
                   tries, polls, error_code, error_message, audio_duration_ms, timings,
                   created_at, updated_at, finished_at)
SELECT md5(g::text), %(batch)s, 'f' || g, g, '/archive/f' || g || '.wav', '{}'::json, 'x',
       CASE WHEN g %% 100 = 0 THEN 'FAILED' WHEN g %% 250 = 1 THEN 'DEAD'
            WHEN g %% 10 = 7 THEN 'PENDING' ELSE 'SUCCEEDED' END,
       1, 0, 0,
       CASE WHEN g %% 100 = 0 THEN 'not_media' WHEN g %% 250 = 1 THEN 'provider_timeout' END,
       CASE WHEN g %% 100 = 0 THEN 'f' || g || ' is not a media file' END,
       60000, '{"prepare": 0.5, "transcribe": 2.0}'::json, now(), now(), now()
FROM generate_series(1, %(n)s) AS g
"""


def seed(url: str, n: int, batch: str = "big") -> tuple[Any, float]:
    """The migrated ledger with one batch of ``n`` items; and the seconds seeding took."""
    from pipeline.ledger import open_ledger

    ledger = open_ledger(url)
    ledger.ensure_batch(batch, kind="submit", out="/srv/out", engine="local", model="tiny.en")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # Building the secondary indexes once after the insert is several times faster
        # than maintaining them row by row; the schema ends up exactly as migrated.
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'items' AND "
            "indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(SEED, {"batch": batch, "n": n})
        for _, definition in indexes:
            conn.execute(definition)
        # As autovacuum would leave it: the visibility map lets counts use the index alone.
        conn.execute("VACUUM ANALYZE items")
    return ledger, time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median milliseconds of ``repeat`` calls (after one warm-up)."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def measure(ledger: Any, batch: str = "big") -> dict[str, float]:
    from pipeline.console.queries import ItemFilter, batch_summary, encode_cursor, items_page
    from pipeline.outputs.report import batch_status

    n = sum(ledger.counts(batch).values())
    deep = encode_cursor(n - 1000, "")
    return {
        "first page (50)": timed(lambda: items_page(ledger, batch, ItemFilter())),
        "page deep in the batch (cursor)": timed(
            lambda: items_page(ledger, batch, ItemFilter(after=deep))
        ),
        "state=FAILED page": timed(lambda: items_page(ledger, batch, ItemFilter(state="FAILED"))),
        "code=provider_timeout page": timed(
            lambda: items_page(ledger, batch, ItemFilter(code="provider_timeout"))
        ),
        "id search q=99999 page": timed(lambda: items_page(ledger, batch, ItemFilter(q="99999"))),
        "batch counts (Ledger.counts)": timed(lambda: ledger.counts(batch)),
        "batch summary (counts, audio, ETA)": timed(lambda: batch_summary(ledger, batch)),
        "status object (GET /api/batches/{batch})": timed(
            lambda: batch_status(ledger, batch, timing_sample=5000)
        ),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with scratch_database("bulkscribe_console_bench") as url:
        ledger, seeded = seed(url, n)
        results = measure(ledger)
        ledger.engine.dispose()
    print(f"{n:,} items seeded in {seeded:.1f} s\n")
    print("| query | median ms |\n|---|---:|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
