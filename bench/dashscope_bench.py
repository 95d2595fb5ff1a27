"""Makespan of `bulkscribe run --engine dashscope` against the emulator vs the ideal.

The emulator runs every task for exactly L seconds with at most C running at once, so no
client can finish N files faster than ceil(N/C) * L. This runs the real CLI on N short files
(copies of one clip, so the emulator's transcript cache keeps the model out of the way) and
prints the measured makespan as a ratio to that ideal (target <= 1.10).

    python bench/dashscope_bench.py [--n 60,200] [--latency 5] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _media import speech_minutes

from pipeline.emulator.server import free_port

EXE = str(Path(sys.executable).with_name("bulkscribe"))


def start_emulator(port: int, latency: float, concurrency: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            EXE,
            "emulator",
            "--port",
            str(port),
            "--latency-s",
            str(latency),
            "--max-concurrency",
            str(concurrency),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("emulator did not start")


def one_run(
    tmp: Path, port: int, n: int, model: str, workers: int
) -> tuple[float, int, float, float]:
    clip = speech_minutes(0.1)
    manifest = tmp / f"m-{model}-{n}.jsonl"
    manifest.write_text(
        "".join(json.dumps({"id": f"f{i}", "source": str(clip)}) + "\n" for i in range(n))
    )
    env = {
        **os.environ,
        "DASHSCOPE_API_KEY": "bench",
        "BULKSCRIBE_DASHSCOPE_BASE_URL": f"http://127.0.0.1:{port}/api/v1",
        # Poll often enough that a finished task is noticed within a fraction of L.
        "BULKSCRIBE_POLL__FIRST_S": "0.25",
        "BULKSCRIBE_POLL__MAX_S": "0.5",
        "BULKSCRIBE_PROVIDER__REQUESTS_PER_S": "200",
        "BULKSCRIBE_PROVIDER__BATCH_SIZE": "1",
    }
    out = tmp / f"out-{model}-{n}"
    wall0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            EXE,
            "run",
            str(manifest),
            "--out",
            str(out),
            "--engine",
            "dashscope",
            "--model",
            model,
            "--workers",
            str(workers),
            "--formats",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    tasks = httpx.get(f"http://127.0.0.1:{port}/_emulator/tasks").json()
    submits = sorted(_epoch(t["submitted_at"]) - wall0 for t in tasks)
    return elapsed, len(tasks), submits[0], submits[-1]


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").astimezone().timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="60,200", help="batch sizes, comma-separated")
    ap.add_argument("--latency", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    port = free_port()
    emu = start_emulator(port, args.latency, args.concurrency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                for model in ("qwen3-asr-flash-filetrans", "fun-asr"):
                    httpx.post(f"http://127.0.0.1:{port}/_emulator/reset")
                    rows.append((n, model, *one_run(Path(tmp), port, n, model, args.workers)))
    finally:
        emu.terminate()
        emu.wait()
    # A run pays a fixed start (process start, first probe and normalize) and the first
    # round's stagger (the first C files are prepared one after another), so the ratio
    # falls as N grows.
    print(
        f"L={args.latency:g} s, C={args.concurrency}, --workers {args.workers}: ideal ceil(N/C)*L"
    )
    print(
        f"{'N':>5} {'model':<28} {'tasks':>6} {'1st submit s':>13} {'last submit s':>14} "
        f"{'ideal s':>8} {'makespan s':>11} {'ratio':>7}"
    )
    for n, model, elapsed, tasks, first, last in rows:
        ideal = math.ceil(n / args.concurrency) * args.latency
        print(
            f"{n:>5} {model:<28} {tasks:>6} {first:>13.2f} {last:>14.2f} {ideal:>8.1f} "
            f"{elapsed:>11.1f} {elapsed / ideal:>7.3f}  (target <= 1.10)"
        )


if __name__ == "__main__":
    main()
