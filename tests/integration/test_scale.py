"""An embedded run is linear in its manifest: per-item time stays flat as the manifest grows.

Real CLI runs over manifests of empty files: each item is claimed and fails at its probe
with empty_audio before ffprobe runs, so what is timed is the driver's own work per item.
The planner used to re-sort every remaining row after each step: 1,000 lines took 5.7 s
and 4,000 took 57.7 s. Missing files never reach a step: the run's intake fails them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e import BULKSCRIBE

pytestmark = pytest.mark.slow


def manifest_of(path: Path, sources: list[Path]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"m{i}", "source": str(s)}) + "\n" for i, s in enumerate(sources))
    )
    return path


def run(manifest: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [BULKSCRIBE, "run", str(manifest), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, json.loads(proc.stdout)


def timed_run(tmp_path: Path, n: int) -> float:
    """Wall seconds of ``bulkscribe run`` over ``n`` empty files; all FAILED empty_audio."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    sources = [empty / f"{i}.wav" for i in range(n)]
    for source in sources:
        source.touch()
    manifest = manifest_of(tmp_path / f"m{n}.jsonl", sources)
    started = time.perf_counter()
    proc, summary = run(manifest, tmp_path / f"o{n}")
    wall = time.perf_counter() - started
    assert (proc.returncode, summary["counts"]) == (1, {"FAILED": n}), proc.stderr[-2000:]
    return wall


def test_per_item_time_is_flat_from_1000_to_8000_lines(tmp_path: Path) -> None:
    """Per-item wall time (start-up, timed on a one-line run, taken off) at 8,000 lines is
    at most twice that at 1,000; quadratic planning made it about eight times."""
    base = timed_run(tmp_path, 1)
    small = (timed_run(tmp_path, 1_000) - base) / 1_000
    large = (timed_run(tmp_path, 8_000) - base) / 8_000
    assert large <= 2 * small, f"{large * 1000:.2f} ms/item at 8,000 vs {small * 1000:.2f} at 1,000"


def test_missing_files_fail_at_intake_and_a_file_that_appears_is_tried(tmp_path: Path) -> None:
    """20,000 missing files fail in the run's intake, each with its own not_found line and
    message, reported as failures of this run; no step runs for them. A file that appears
    before the next run is a new attempt there; the rest stay as they were."""
    n = 20_000
    sources = [tmp_path / "absent" / f"{i}.wav" for i in range(n)]
    manifest = manifest_of(tmp_path / "m.jsonl", sources)
    out = tmp_path / "out"
    proc, summary = run(manifest, out)
    assert (proc.returncode, summary["counts"]) == (1, {"FAILED": n}), proc.stderr[-2000:]
    assert f"{n} item(s), 0 already finished, {n} to do" in proc.stderr
    assert proc.stderr.count(" FAILED ") == n
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["error"]["code"] for r in results} == {"not_found"}
    assert results[7]["error"]["message"] == f"{sources[7]} does not exist"
    events = [json.loads(line) for line in (out / "bulkscribe.log").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "item.failed"]
    assert len(failed) == n and {e["stage"] for e in failed} == {"intake"}
    assert not [e for e in events if e["event"] == "item.claim_lost" or "prepare" in e["event"]]

    sources[7].parent.mkdir()
    sources[7].touch()  # appears, empty: tried again, and fails at its probe this time
    proc, summary = run(manifest, out)
    assert proc.returncode == 1
    by_id = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert by_id["m7"]["error"]["code"] == "empty_audio"
    assert {r["error"]["code"] for k, r in by_id.items() if k != "m7"} == {"not_found"}
    assert f"{n - 1} already finished, 1 to do" in proc.stderr
