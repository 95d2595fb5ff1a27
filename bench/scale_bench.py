"""Embedded run overhead per item as the manifest grows: it must stay flat (linear run time).

Each size is a manifest of N lines naming files that do not exist, so every item fails at
once with not_found and what is left is the driver's own work per item: seeding the ledger,
planning, claiming, failing, re-reading, logging, progress and results.jsonl. Each run is the
real ``bulkscribe run`` in a fresh output directory; a one-line run is timed first and its
wall time (interpreter start, imports, ledger creation) taken off the others.

Prints, per size: wall time, overhead per item, and the ratio of the largest size's
per-item overhead to the smallest's (target: flat, <= 1.5; the planner used to re-sort every
remaining row after each step, so 4,000 lines took ten times as long as 1,000).

    python bench/scale_bench.py                  # 1,000, 10,000 and 100,000 lines
    python bench/scale_bench.py 1000 8000        # other sizes
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (1_000, 10_000, 100_000)


def missing_files_manifest(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"m{i}", "source": f"/nonexistent/bench/{i}.wav"}) + "\n")
    return path


def run_wall_s(manifest: Path, out: Path) -> float:
    """Wall seconds of one real ``bulkscribe run``; every item must have failed not_found."""
    exe = Path(sys.executable).with_name("bulkscribe")
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "run", str(manifest), "--out", str(out), "--json"],
                          capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout)
    if proc.returncode != 1 or summary["counts"] != {"FAILED": summary["total"]}:
        raise SystemExit(f"unexpected run: exit {proc.returncode}, {summary['counts']}")
    return wall


def main(sizes: tuple[int, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="bulkscribe-scale-") as tmp:
        root = Path(tmp)
        base = min(run_wall_s(missing_files_manifest(root / f"m1-{k}.jsonl", 1),
                              root / f"o1-{k}") for k in range(2))
        rows = []
        for n in sizes:
            wall = run_wall_s(missing_files_manifest(root / f"m{n}.jsonl", n), root / f"o{n}")
            rows.append((n, wall, (wall - base) / n * 1000))
    print(f"start-up (1-line run): {base:.2f} s")
    print(f"{'lines':>8} {'wall s':>9} {'ms/item':>9} {'items/s':>9}")
    for n, wall, per_ms in rows:
        print(f"{n:>8,} {wall:>9.1f} {per_ms:>9.3f} {1000 / per_ms:>9.0f}")
    first, last = rows[0], rows[-1]
    print(f"per-item overhead {last[0]:,} / {first[0]:,} lines: {last[2] / first[2]:.2f}x "
          "(target: flat, <= 1.5)")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or SIZES)
