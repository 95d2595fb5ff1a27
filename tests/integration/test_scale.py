"""An embedded run is linear in its manifest: per-item time stays flat as the manifest grows.

Real CLI runs over manifests of missing files (each item fails at once with not_found, so
what is timed is the driver's own work per item). The planner used to re-sort every
remaining row after each step: 1,000 lines took 5.7 s and 4,000 took 57.7 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from e2e import BULKSCRIBE

pytestmark = pytest.mark.slow


def timed_run(tmp_path: Path, n: int) -> float:
    """Wall seconds of ``bulkscribe run`` over ``n`` missing files; all of them FAILED."""
    manifest = tmp_path / f"m{n}.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": f"m{i}", "source": str(tmp_path / "absent" / f"{i}.wav")}) + "\n"
            for i in range(n)
        )
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [BULKSCRIBE, "run", str(manifest), "--out", str(tmp_path / f"o{n}"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    summary = json.loads(proc.stdout)
    assert (proc.returncode, summary["counts"]) == (1, {"FAILED": n}), proc.stderr[-2000:]
    return wall


def test_per_item_time_is_flat_from_1000_to_8000_lines(tmp_path: Path) -> None:
    """Per-item wall time (start-up, timed on a one-line run, taken off) at 8,000 lines is
    at most twice that at 1,000; quadratic planning made it about eight times."""
    base = timed_run(tmp_path, 1)
    small = (timed_run(tmp_path, 1_000) - base) / 1_000
    large = (timed_run(tmp_path, 8_000) - base) / 8_000
    assert large <= 2 * small, f"{large * 1000:.2f} ms/item at 8,000 vs {small * 1000:.2f} at 1,000"
