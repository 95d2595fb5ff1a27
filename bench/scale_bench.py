"""Embedded run overhead per item as the manifest grows: it must stay flat (linear run time).

Each size is a manifest of N lines naming files that do not exist, so every item fails at
once with not_found and what is left is the driver's own work per item: seeding the ledger,
planning, claiming, failing, re-reading, logging, progress and results.jsonl. Each run is the
real ``bulkscribe run`` in a fresh output directory; a one-line run is timed first and its
wall time (interpreter start, imports, ledger creation) taken off the others.

Prints, per size: wall time, wall and CPU overhead per item, and the ratios of the largest
size's per-item overhead to the smallest's (target: flat, <= 1.5; the planner used to re-sort every
remaining row after each step, so 4,000 lines took ten times as long as 1,000).

    python bench/scale_bench.py                  # 1,000, 10,000 and 100,000 lines
    python bench/scale_bench.py 1000 8000        # other sizes
"""

from __future__ import annotations

import json
import os
import resource
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


def run_s(manifest: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one real ``bulkscribe run``; every item must
    have failed not_found. CPU is what to compare on a shared machine: other load stretches
    wall time, not the run's own CPU."""
    exe = Path(sys.executable).with_name("bulkscribe")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "run", str(manifest), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(proc.stdout)
    if proc.returncode != 1 or summary["counts"] != {"FAILED": summary["total"]}:
        raise SystemExit(f"unexpected run: exit {proc.returncode}, {summary['counts']}")
    return wall, cpu


def main(sizes: tuple[int, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="bulkscribe-scale-") as tmp:
        root = Path(tmp)
        base = min(
            (
                run_s(missing_files_manifest(root / f"m1-{k}.jsonl", 1), root / f"o1-{k}")
                for k in range(2)
            ),
            key=lambda t: t[0],
        )
        rows = []
        for n in sizes:
            wall, cpu = run_s(missing_files_manifest(root / f"m{n}.jsonl", n), root / f"o{n}")
            rows.append((n, wall, (wall - base[0]) / n * 1000, (cpu - base[1]) / n * 1000))
    print(
        f"start-up (1-line run): {base[0]:.2f} s wall, {base[1]:.2f} s CPU; load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'lines':>8} {'wall s':>9} {'wall ms/item':>13} {'CPU ms/item':>12} {'items/s':>8}")
    for n, wall, per_ms, cpu_ms in rows:
        print(f"{n:>8,} {wall:>9.1f} {per_ms:>13.3f} {cpu_ms:>12.3f} {1000 / per_ms:>8.0f}")
    first, last = rows[0], rows[-1]
    print(
        f"per-item overhead {last[0]:,} / {first[0]:,} lines: wall {last[2] / first[2]:.2f}x, "
        f"CPU {last[3] / first[3]:.2f}x (target: flat, <= 1.5)"
    )


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or SIZES)
