"""status of a large batch: counts come from the kept item_counts, and nothing is read for
stage timings or failures beyond what is shown."""

from __future__ import annotations

import json
import time

import pytest
from scale_support import bulkscribe, sql

from pipeline.ledger import open_ledger
from pipeline.outputs.report import batch_status

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SEED = """
INSERT INTO batches (id, kind, out, engine, model, options, created_at)
VALUES ('big', 'submit', '/tmp/big', 'local', 'tiny.en', '{}', now());
INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state, attempt,
                   tries, polls, created_at, updated_at, error_code, error_message)
SELECT md5(g::text), 'big', 'rec-' || g, g, '/data/rec-' || g || '.wav', '{}', md5(g::text),
       CASE WHEN g % 10 = 0 THEN 'SUCCEEDED' WHEN g % 97 = 0 THEN 'FAILED' ELSE 'PENDING' END,
       1, 0, 0, now(), now(), CASE WHEN g % 97 = 0 AND g % 10 <> 0 THEN 'not_found' END,
       CASE WHEN g % 97 = 0 AND g % 10 <> 0 THEN 'gone' END
FROM generate_series(1, %s) g;
"""


def test_status_of_a_large_batch_is_fast(pg_url: str, env: dict[str, str]) -> None:
    """300,000 items: batch_status answers in under 0.5 s, and the CLI agrees."""
    n = 300_000
    ledger = open_ledger(pg_url)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SEED.replace("%s", str(n)))
        conn.execute("VACUUM ANALYZE items")  # as submit does after a large intake
    failed = sum(1 for g in range(1, n + 1) if g % 97 == 0 and g % 10)
    batch_status(ledger, "big")  # warm the connection pool
    started = time.perf_counter()
    report = batch_status(ledger, "big")
    elapsed = time.perf_counter() - started
    assert report is not None
    assert report["counts"] == {
        "SUCCEEDED": n // 10,
        "FAILED": failed,
        "PENDING": n - n // 10 - failed,
    }
    assert len(report["failures"]) == 20 and report["failures"][0]["id"] == "rec-97"
    assert report["done"] is False and report["entering"] is False
    assert elapsed < 0.5, f"batch_status took {elapsed:.2f} s"
    started = time.perf_counter()
    out = bulkscribe(env, "status", "big")
    # The command reads through psycopg alone, the console through the ledger: one object.
    assert out == json.loads(json.dumps(report, default=str))
    print(
        f"batch_status {elapsed * 1000:.0f} ms; the status command "
        f"{time.perf_counter() - started:.2f} s"
    )
    assert out["total"] == n
    assert sql(pg_url, "SELECT count(*) FROM items WHERE batch_id = 'big'") == [(n,)]
