"""Streaming intake: a long manifest enters the ledger in chunks, in flat memory, and a
submit killed half-way is resumed by submitting again."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from scale_support import BIN, bulkscribe, bulkscribe_measured, sql, write_manifest
from support import wait_until

from pipeline.ledger import open_ledger

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def test_long_manifest_streams_in_flat_memory(tmp_path: Path, env: dict[str, str]) -> None:
    """100,000 lines (with a repeated id and a bad line) go in whole, the repeat fails with
    duplicate_id naming the earlier line, and the submit's peak RSS stays far below what
    holding the manifest would take."""
    manifest = write_manifest(tmp_path / "m.jsonl", 100_000)
    with manifest.open("a") as f:
        f.write('{"id": "rec-0000007", "source": "/data/again.wav"}\n')
        f.write("{not json\n")
    started = time.monotonic()
    out, peak_mb = bulkscribe_measured(env, "submit", str(manifest), "--out", str(tmp_path / "out"))
    elapsed = time.monotonic() - started
    assert out["total"] == 100_002 and out["created"] == 100_002 and out["duplicates"] == 1
    assert peak_mb < 250, f"submit peaked at {peak_mb:.0f} MB"
    url = env["BULKSCRIBE_DATABASE_URL"]
    rows = dict(sql(url, "SELECT state, count(*) FROM items GROUP BY state"))
    assert rows == {"PENDING": 100_000, "FAILED": 2}
    assert sql(url, "SELECT count(*) FROM attempts")[0][0] == 100_002
    (message,) = sql(url, "SELECT error_message FROM items WHERE error_code = 'duplicate_id'")[0]
    assert message == "line 100001: id 'rec-0000007' is already used on line 8"
    assert sql(url, "SELECT intake_at FROM batches") == [(None,)]
    print(f"100,002 lines in {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB")


def test_killed_submit_resumes_without_duplicates(tmp_path: Path, env: dict[str, str]) -> None:
    """kill -9 half-way: the batch stays marked as being entered (the sweeper leaves it
    open), and submitting again adds exactly the missing lines."""
    n = 60_000
    manifest = write_manifest(tmp_path / "m.jsonl", n)
    out_dir = str(tmp_path / "out")
    url = env["BULKSCRIBE_DATABASE_URL"]
    proc = subprocess.Popen(
        [str(BIN / "bulkscribe"), "submit", str(manifest), "--out", out_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def entered() -> int:
        return int(sql(url, "SELECT count(*) FROM items")[0][0])

    wait_until(lambda: entered() >= 10_000, 120, "the first chunks", ignoring=(Exception,))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = entered()
    assert 10_000 <= half < n
    ((batch_id, intake_at),) = sql(url, "SELECT id, intake_at FROM batches")
    assert intake_at is not None
    assert batch_id not in open_ledger(url).open_batches()  # not closed while entering
    status = bulkscribe(env, "status", batch_id)
    assert (status["entering"], status["done"], status["total"]) == (True, False, half)

    out = bulkscribe(env, "submit", str(manifest), "--out", out_dir)
    assert out["batch_id"] == batch_id and out["resumed"] is True
    assert out["created"] == n - half and out["kept"] == half
    assert sql(url, "SELECT count(*), count(DISTINCT key) FROM items") == [(n, n)]
    assert sql(url, "SELECT count(*) FROM attempts") == [(n,)]
    assert sql(url, "SELECT intake_at FROM batches") == [(None,)]
    assert batch_id in open_ledger(url).open_batches()


def test_resume_by_batch_id_and_refusal(tmp_path: Path, env: dict[str, str]) -> None:
    """--batch BATCH resumes explicitly; another manifest to a held --out is refused."""
    manifest = write_manifest(tmp_path / "m.jsonl", 300)
    first = bulkscribe(env, "submit", str(manifest), "--out", str(tmp_path / "out"))
    again = bulkscribe(
        env, "submit", str(manifest), "--out", str(tmp_path / "out"), "--batch", first["batch_id"]
    )
    assert again["batch_id"] == first["batch_id"]
    assert (again["created"], again["kept"]) == (0, 300)
    other = write_manifest(tmp_path / "other.jsonl", 3)
    proc = subprocess.run(
        [str(BIN / "bulkscribe"), "submit", str(other), "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"is used by batch {first['batch_id']}" in proc.stderr
