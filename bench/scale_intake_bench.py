"""Intake at scale: `bulkscribe submit` of generated manifests against PostgreSQL.

For each size: the submit's wall time, items/s and peak RSS (os.wait4 of the child), next to
a plain COPY of the same rows into ``items`` and ``attempts`` (the floor), then the latency
of ``status`` on that batch (in-process and the whole command).

    PYTHONPATH=$PWD python bench/scale_intake_bench.py 100000 1000000
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import RedisServer, scratch_database
from support.services import BIN


def manifest(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"rec-{i:07d}", "source": f"/data/rec-{i:07d}.wav"}) + "\n")


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stdout of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out.decode()


def copy_floor(url: str, n: int) -> float:
    """COPY n item rows and their attempts into a fresh batch: the database's own floor."""
    now = "2026-01-01 00:00:00+00"
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO batches (id, kind, out, engine, model, options, created_at) "
            "VALUES ('floor', 'submit', '/tmp/floor', 'local', 'tiny.en', '{}', now())"
        )
        ids = [uuid.uuid4().hex for _ in range(n)]
        with cur.copy(
            "COPY items (id, batch_id, key, line_no, source, spec, fingerprint, state,"
            " attempt, tries, polls, created_at, updated_at) FROM STDIN"
        ) as cp:
            for i, item_id in enumerate(ids):
                spec = json.dumps(
                    {
                        "id": f"rec-{i:07d}",
                        "source": f"/data/rec-{i:07d}.wav",
                        "engine": "local",
                        "model": "tiny.en",
                        "language": None,
                        "options": {},
                    }
                )
                cp.write_row(
                    (
                        item_id,
                        "floor",
                        f"rec-{i:07d}",
                        i + 1,
                        f"/data/rec-{i:07d}.wav",
                        spec,
                        "0" * 64,
                        "PENDING",
                        1,
                        0,
                        0,
                        now,
                        now,
                    )
                )
        with cur.copy(
            "COPY attempts (item_id, number, engine, model, options, state,"
            " started_at, timings) FROM STDIN"
        ) as cp:
            for item_id in ids:
                cp.write_row((item_id, 1, "local", "tiny.en", "{}", "RUNNING", now, "{}"))
        conn.commit()
    return time.perf_counter() - started


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="bulkscribe-intake-") as work:
        redis = RedisServer(Path(work) / "redis")
        redis.start()
        try:
            for n in sizes:
                with scratch_database("bulkscribe_bench") as url:
                    measure(n, url, redis.url)
        finally:
            redis.stop()


def measure(n: int, url: str, broker_url: str) -> None:
    env = {**os.environ, "BULKSCRIBE_DATABASE_URL": url, "BULKSCRIBE_BROKER_URL": broker_url}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.jsonl"
        manifest(path, n)
        wall, rss, out = run(
            [
                str(BIN / "bulkscribe"),
                "submit",
                str(path),
                "--out",
                f"{tmp}/out",
                "--json",
            ],
            env,
        )
        batch = json.loads(out)["batch_id"]
        from pipeline.ledger import open_ledger
        from pipeline.outputs.report import batch_status

        ledger = open_ledger(url)
        batch_status(ledger, batch)
        t = time.perf_counter()
        batch_status(ledger, batch)
        status_s = time.perf_counter() - t
        status_cmd, _, _ = run([str(BIN / "bulkscribe"), "status", batch, "--json"], env)
        ledger.engine.dispose()
        floor = copy_floor(url, n)
    print(
        json.dumps(
            {
                "lines": n,
                "submit_s": round(wall, 1),
                "items_per_s": round(n / wall),
                "peak_rss_mb": round(rss),
                "copy_floor_s": round(floor, 1),
                "copy_rows_per_s": round(n / floor),
                "batch_status_ms": round(status_s * 1000),
                "status_command_s": round(status_cmd, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000])
