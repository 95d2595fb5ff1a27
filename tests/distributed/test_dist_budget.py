"""Budgets on the fleet: `submit --max-audio-hours` with real workers, beat, PostgreSQL and
the emulator; `retry --max-audio-hours` re-admits what the cap left out."""

from __future__ import annotations

import json

import pytest
from dist_support import Clips, Cluster, distinct_entries
from support import stream_duration

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]


def test_submit_cap_admits_the_manifest_prefix_and_retry_raises_it(
    cluster: Cluster, clips: Clips
) -> None:
    """Five clips under a cap halfway between the 3rd and 4th cumulative duration: exactly
    the first three are transcribed (submitted to the provider), the last two end SKIPPED
    with budget_exceeded in results.jsonl; `retry --max-audio-hours` with room for all
    transcribes those two and nothing else again."""
    cluster.worker(concurrency=2)
    cluster.beat()
    entries = distinct_entries(clips, 5, prefix="cap")
    secs = [stream_duration(clips.files[i]) for i in range(5)]
    cap_s = sum(secs[:3]) + secs[3] / 2
    batch = cluster.submit(
        entries,
        "--engine",
        "dashscope",
        "--model",
        "qwen3-asr-flash-filetrans",
        "--max-audio-hours",
        f"{cap_s / 3600:.6f}",
    )
    rows = cluster.wait_done(batch, timeout_s=120)
    assert {r.key: r.state.value for r in rows} == {
        "cap000": "SUCCEEDED",
        "cap001": "SUCCEEDED",
        "cap002": "SUCCEEDED",
        "cap003": "SKIPPED",
        "cap004": "SKIPPED",
    }
    results = [
        json.loads(line)
        for line in (cluster.out_dir(batch) / "results.jsonl").read_text().splitlines()
    ]
    assert [r["status"] for r in results][3:] == ["SKIPPED", "SKIPPED"]
    assert {r["error"]["code"] for r in results[3:]} == {"budget_exceeded"}
    assert len(cluster.em_tasks()) == 3  # the skipped files never reached the provider

    retried = cluster.cli_json("retry", batch, "--max-audio-hours", "1")
    assert retried["retried"] == 2
    rows = cluster.wait_done(batch, timeout_s=120)
    assert {r.state.value for r in rows} == {"SUCCEEDED"}
    assert len(cluster.em_tasks()) == 5
