"""results.jsonl of a large batch is written streaming: rows read page by page, the file
moved into place, or uploaded to S3 in parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from scale_support import AWS_ENV

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

N = 200_000
SEED = """
INSERT INTO batches (id, kind, out, engine, model, options, created_at, done_at)
VALUES ('big', 'submit', '/tmp/big', 'local', 'tiny.en', '{}', now(), now());
INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state, attempt,
                   tries, polls, created_at, updated_at, outputs, audio_duration_ms)
SELECT md5(g::text), 'big', 'rec-' || g, g, '/data/rec-' || g || '.wav', '{}', md5(g::text),
       'SUCCEEDED', 1, 0, 0, now(), now(),
       json_build_object('json', 'rec-' || g || '.json', 'txt', 'rec-' || g || '.txt'), 1000
FROM generate_series(%s, 1, -1) g;
VACUUM ANALYZE items;
"""
WRITE = """
import sys
from pipeline.flow.outputs import DirSink, StoreSink
from pipeline.ledger import open_ledger
from pipeline.outputs.results import write_batch_results
from pipeline.storage import open_store
from pathlib import Path
ledger = open_ledger(sys.argv[1])
target = sys.argv[2]
if target.startswith("s3://"):
    sink = StoreSink(open_store(target, endpoint_url=sys.argv[3]))
else:
    sink = DirSink(Path(target))
print(write_batch_results(ledger, "big", sink))
# VmHWM: this process's own peak (ru_maxrss would count the forked test process's size)
print(next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) // 1024)
"""


def _seed(url: str) -> None:
    from pipeline.ledger import open_ledger

    open_ledger(url).engine.dispose()  # the schema
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SEED.replace("%s", str(N)).split(";"):
            if statement.strip():
                conn.execute(statement)


def _write(url: str, target: str, *extra: str) -> tuple[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", WRITE, url, target, *extra],
        env={**os.environ, **AWS_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, peak_mb = proc.stdout.split()
    return where, int(peak_mb)


def test_results_of_a_large_batch_stream(tmp_path: Path, pg_url: str, moto_url: str) -> None:
    """200,000 lines in manifest order (rows were inserted in reverse), in bounded memory,
    to a directory and to S3 (a multipart upload: the file is tens of MB)."""
    _seed(pg_url)
    where, peak_mb = _write(pg_url, str(tmp_path))
    assert where == str(tmp_path / "results.jsonl")
    with open(where, encoding="utf-8") as f:
        first = json.loads(f.readline())
        count = 1 + sum(1 for _ in f)
    assert count == N
    assert first == {
        "id": "rec-1",
        "source": "/data/rec-1.wav",
        "status": "SUCCEEDED",
        "error": None,
        "outputs": {"json": "rec-1.json", "txt": "rec-1.txt"},
        "audio_duration_ms": 1000,
        "language": None,
    }
    assert peak_mb < 200, f"writing results.jsonl peaked at {peak_mb} MB"
    size = os.path.getsize(where)

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="results")
    where, _ = _write(pg_url, "s3://results/batch", moto_url)
    assert where == "s3://results/batch/results.jsonl"
    head = s3.head_object(Bucket="results", Key="batch/results.jsonl")
    assert head["ContentLength"] == size
    assert "-" in head["ETag"]  # a multipart upload's ETag: <md5 of parts>-<parts>
