"""Whole batches through real Celery workers: DashScope (emulated) over S3, and the local engine."""

from __future__ import annotations

import collections
import itertools
import json
import shutil
from pathlib import Path

import pytest
from dist_support import (
    MEDIA_BUCKET,
    Clips,
    Cluster,
)
from support import s3_client, wer

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]


def test_fifty_files_end_to_end(cluster: Cluster, clips: Clips, tmp_path: Path) -> None:
    """Fifty short files go through Fun-ASR on the emulator: all succeed, results are written."""
    entries = []
    for i in range(50):
        src = clips.files[i % len(clips.files)]
        if i % 2:  # a copy under another name: the same audio, deduplicated in storage
            copy = tmp_path / f"copy{i:02d}.wav"
            shutil.copyfile(src, copy)
            entries.append({"id": f"item{i:02d}", "source": str(copy)})
        else:  # a trim: distinct audio
            entries.append(
                {"id": f"item{i:02d}", "source": str(src), "start_s": round(0.01 * i, 2)}
            )
    cluster.worker(concurrency=3)
    cluster.beat()
    batch = cluster.submit(entries, "--engine", "dashscope", "--model", "fun-asr")
    rows = cluster.wait_done(batch, timeout_s=150)

    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    results = cluster.results(batch)
    assert [r["id"] for r in results] == [e["id"] for e in entries]
    assert {r["status"] for r in results} == {"SUCCEEDED"}
    status = cluster.cli_json("status", batch)
    assert status["done"] is True
    assert status["counts"] == {"SUCCEEDED": 50}
    assert status["total"] == 50
    # Every item was sent once (copies share a file, so count items, not paths).
    sent = sum(len(t["file_urls"]) for t in cluster.em_tasks())
    assert sent == 50
    out = cluster.out_dir(batch)
    for entry in entries:
        doc = json.loads((out / f"{entry['id']}.json").read_text())
        assert doc["transcripts"][0]["text"].startswith("echo "), entry
        assert (out / f"{entry['id']}.srt").is_file()
    # Shared audio was kept while any copy needed it (none failed) and dropped at the end.
    stored = s3_client(cluster.moto).list_objects_v2(Bucket=MEDIA_BUCKET, Prefix="norm/")
    assert stored.get("KeyCount", 0) == 0, [o["Key"] for o in stored.get("Contents", [])]


def test_workers_hand_each_step_to_the_next_without_the_sweeper(
    cluster: Cluster, clips: Clips
) -> None:
    """With no beat running, filetrans items still go prepare → submit → polls → persist:
    each worker queues the next step itself. The sweeper is only the safety net (and closes
    the batch once it runs)."""
    entries = [{"id": f"hand{i}", "source": str(f)} for i, f in enumerate(clips.files)]
    cluster.em_config(latency_s=2.5)  # several polls find the task still running
    try:
        cluster.worker(concurrency=2)
        batch = cluster.submit(
            entries, "--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans"
        )
        cluster.wait_states(
            batch,
            lambda c: c["SUCCEEDED"] == len(entries),
            90,
            "every item SUCCEEDED with no sweeper",
        )
    finally:
        cluster.em_config(latency_s=0.3)
    rows = cluster.rows(batch)
    assert all(r.polls >= 2 for r in rows), [(r.key, r.polls) for r in rows]
    assert all(n == 1 for n in cluster.submissions().values())
    assert len(cluster.em_tasks()) == len(entries)
    cluster.beat()
    rows = cluster.wait_done(batch, timeout_s=30)
    assert [r["status"] for r in cluster.results(batch)] == ["SUCCEEDED"] * len(entries)


def test_a_task_that_ends_hands_its_room_to_the_next_item(cluster: Cluster, clips: Clips) -> None:
    """At the in-flight cap (one task here) an item refused for room gets no message of its
    own: the poll that finds a task done queues the next submission. With the shipped
    defaults and no beat (so no sweeper to fall back on) every item still goes through,
    one task at a time, each sent once and asked about once or twice, not every few
    seconds."""
    cluster.use_defaults()
    entries = [{"id": f"room{i}", "source": str(f)} for i, f in enumerate(clips.files)]
    worker = cluster.worker(
        concurrency=2,
        env={"BULKSCRIBE_PROVIDER__MAX_INFLIGHT_TASKS": "1", "BULKSCRIBE_LOG_LEVEL": "info"},
    )
    batch = cluster.submit(entries, "--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")
    cluster.wait_states(
        batch,
        lambda c: c["SUCCEEDED"] == len(entries),
        90,
        "every item SUCCEEDED with no sweeper",
    )
    rows = cluster.rows(batch)
    cluster.assert_submitted_once(rows)
    assert len(cluster.em_tasks()) == len(entries)
    by_start = sorted(rows, key=lambda r: r.submitted_at.timestamp() if r.submitted_at else 0.0)
    for before, after in itertools.pairwise(by_start):  # never two in flight
        assert after.submitted_at and before.finished_at
        assert after.submitted_at >= before.finished_at, (before.key, after.key)
    steps = [e for e in _events(worker.log, "step") if e.get("stage") == "submit"]
    per_item = collections.Counter(str(e["item_id"]) for e in steps)
    assert set(per_item) == {e["id"] for e in entries}
    assert max(per_item.values()) <= 2, per_item  # refused at most once, then handed room


def test_chains_started_one_item_at_a_time_merge_into_packed_polls(
    cluster: Cluster, clips: Clips
) -> None:
    """With the shipped defaults and no sweeper, single-file tasks submitted one message per
    item (as prepare steps hand them on) are polled in packed messages: polls queued by a
    worker within a moment of each other share one. Every item is still submitted once and
    ends SUCCEEDED."""
    cluster.use_defaults()
    entries = [
        {
            "id": f"merge{i:02d}",
            "source": str(clips.files[i % len(clips.files)]),
            "start_s": 0.01 * i,
        }
        for i in range(32)
    ]
    cluster.em_config(latency_s=3.0)  # several polls per task
    try:
        worker = cluster.worker(concurrency=4, env={"BULKSCRIBE_LOG_LEVEL": "info"})
        batch = cluster.submit(
            entries, "--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans"
        )
        cluster.wait_states(
            batch,
            lambda c: c["SUCCEEDED"] == len(entries),
            120,
            "every item SUCCEEDED with no sweeper",
        )
    finally:
        cluster.em_config(latency_s=0.3)
    rows = cluster.rows(batch)
    cluster.assert_submitted_once(rows)
    assert len(cluster.em_tasks()) == len(entries)
    polls = [e for e in _events(worker.log, "step") if e.get("stage") == "poll"]
    tasks_per_message: dict[str, set[str]] = collections.defaultdict(set)
    for event in polls:
        tasks_per_message[str(event["task_id"])].add(str(event["item_id"]))
    assert {i for items in tasks_per_message.values() for i in items} == {e["id"] for e in entries}
    # Fewer poll messages than polls of single-file tasks: some carried several tasks.
    assert max(len(items) for items in tasks_per_message.values()) > 1
    assert len(tasks_per_message) < len(polls), (len(tasks_per_message), len(polls))


@pytest.mark.model
def test_local_engine_through_transcribe_queue(cluster: Cluster, clips: Clips) -> None:
    """With --engine local items go PREPARED → transcribe queue → SUCCEEDED with real text."""
    entries = [{"id": f"local{i}", "source": str(f)} for i, f in enumerate(clips.files)]
    # One worker per queue, so the transcribe queue is provably the one doing the work.
    cluster.worker(concurrency=1, queues="prepare,provider")
    transcriber = cluster.worker(concurrency=1, queues="transcribe")
    cluster.beat()
    batch = cluster.submit(entries, "--engine", "local", "--model", "tiny.en")
    rows = cluster.wait_done(batch, timeout_s=150)

    assert {r.state.value for r in rows} == {"SUCCEEDED"}
    assert cluster.em_tasks() == []  # the provider was never involved
    out = cluster.out_dir(batch)
    texts = [(out / f"{e['id']}.txt").read_text() for e in entries]
    assert all(t.strip() for t in texts), texts
    # Word error rate over the five sentences together (espeak's voice costs tiny.en a word
    # or two in some of them).
    assert wer(" ".join(clips.texts), " ".join(texts)) < 0.35, texts
    for row in rows:
        timings = cluster.ledger.attempts_of(row.id)[-1]["timings"]
        assert {"prepare", "transcribe"} <= set(timings)
    done = _events(transcriber.log, "transcribe.done")
    assert sorted(str(e["item_id"]) for e in done) == [e["id"] for e in entries]


def _events(path: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            out.append(json.loads(line))
    return [e for e in out if e.get("event") == name]
