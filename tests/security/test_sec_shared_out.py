"""Two distributed batches given the same --out: the second is refused (exit 2, naming the
batch that writes there), so neither overwrites the other's outputs or results.jsonl; the
same manifest submitted again resumes its own batch instead."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))

from dist_support import (  # noqa: F401  (pytest finds fixtures by name)
    Clips,
    Cluster,
    clips,
    cluster,
    distinct_entries,
    emulator,
    ledger,
    manifest,
    moto_url,
    pg_url,
    redis_server,
)

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]

FILETRANS = ("--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")


def test_second_batch_cannot_take_anothers_out(
    cluster: Cluster,  # noqa: F811 (the fixture)
    clips: Clips,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    """Batch A (9 files) has written to --out; batch B (1 file, an id A also has, another
    source) is submitted to that --out however it is spelt (trailing slash, .., a symlink):
    refused every time, naming A. All 9 of A's outputs and results rows survive; B runs
    into a folder of its own; A's manifest again resumes A with nothing sent twice."""
    cluster.worker(concurrency=2)
    cluster.beat()
    shared = tmp_path / "shared"
    first = distinct_entries(clips, 9, prefix="sh")
    a = cluster.submit(first, *FILETRANS, name="a", out=shared)
    cluster.wait_done(a, timeout_s=90)
    outputs = {p.name: p.read_bytes() for p in shared.iterdir() if p.is_file()}
    assert len(cluster.results(a)) == 9 and len(outputs) == 9 * 4 + 1
    batches = set(cluster.ledger.batch_ids())

    intruder = [{"id": "sh000", "source": str(clips.files[4]), "start_s": 0.5}]
    path = manifest(tmp_path / "b.jsonl", intruder)
    (tmp_path / "link").symlink_to(shared)
    for spelling in (
        str(shared),
        f"{shared}/",
        str(tmp_path / "x" / ".." / "shared"),
        str(tmp_path / "link"),
        f"file://{shared}",
    ):
        refused = cluster.cli("submit", str(path), "--out", spelling, *FILETRANS, check=False)
        assert refused.returncode == 2, (spelling, refused.stdout, refused.stderr)
        assert f"used by batch {a}" in refused.stderr
    assert set(cluster.ledger.batch_ids()) == batches  # nothing was created

    b = cluster.submit(intruder, *FILETRANS, name="b", out=tmp_path / "own")
    cluster.wait_done(b, timeout_s=60)
    assert [r["id"] for r in cluster.results(b)] == ["sh000"]
    assert {p.name: p.read_bytes() for p in shared.iterdir() if p.is_file()} == outputs
    rows = cluster.results(a)
    assert [r["id"] for r in rows] == [e["id"] for e in first]
    assert {r["status"] for r in rows} == {"SUCCEEDED"}

    sent = len(cluster.em_tasks())
    again = cluster.cli_json("submit", str(tmp_path / "a.jsonl"), "--out", str(shared), *FILETRANS)
    assert (again["batch_id"], again["resumed"]) == (a, True)
    assert all(r.attempt == 1 for r in cluster.rows(a))
    assert len(cluster.em_tasks()) == sent
    assert json.loads((shared / "results.jsonl").read_text().splitlines()[0])["id"] == "sh000"
