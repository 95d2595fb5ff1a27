"""A batch's end: the worker that finishes the last item writes results.jsonl at once (one
writer, however the finishes race), status says done only then, and every step of an item
leaves one JSON line on its worker's stderr."""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from dist_support import Clips, Cluster, distinct_entries, manifest
from support import wait_until, walk

from pipeline.inputs.batches import seeds_for
from pipeline.inputs.manifest import load_manifest
from pipeline.ledger import Failure
from pipeline.outputs.results import close_batch
from pipeline.states import ItemState

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]

FILETRANS = ("--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")


def _steps(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"step"' in line:
            event = json.loads(line)
            if event.get("event") == "step":
                out.append(event)
    return out


def test_last_item_writes_results_without_a_sweeper(cluster: Cluster, clips: Clips) -> None:
    """No beat at all: the worker finishing the last item writes results.jsonl and marks the
    batch done within seconds; status says done only with the file there. The worker runs
    at its default log level (info) and logs one JSON line per step of each item."""
    cluster.use_defaults()  # no log-level override either: info is the worker's default
    worker = cluster.worker(concurrency=2)
    entries = distinct_entries(clips, 3, prefix="fin")
    batch = cluster.submit(entries, *FILETRANS)
    cluster.wait_states(batch, lambda c: c["SUCCEEDED"] == len(entries), 60, "all SUCCEEDED")
    last = max(r.finished_at for r in cluster.rows(batch) if r.finished_at)
    wait_until(
        lambda: (cluster.ledger.batch(batch) or {}).get("done_at"),
        5,
        "the batch marked done",
        on_timeout=lambda: cluster.report(batch),
    )
    done = cluster.ledger.batch(batch) or {}
    assert (done["done_at"] - last).total_seconds() < 5
    results = cluster.results(batch)
    assert [r["id"] for r in results] == [e["id"] for e in entries]
    assert {r["status"] for r in results} == {"SUCCEEDED"}
    status = cluster.cli_json("status", batch)
    assert (status["done"], status["state"]) == (True, "done")
    assert "done" in cluster.cli("status", batch).stdout

    steps = _steps(worker.log)
    for entry in entries:
        mine = [s for s in steps if s["item_id"] == entry["id"]]
        assert {"item_id", "batch_id", "stage", "duration_s", "outcome"} <= set(mine[0])
        assert all(s["batch_id"] == batch and s["duration_s"] >= 0 for s in mine)
        stages = collections.Counter((s["stage"], s["outcome"]) for s in mine)
        polls = stages.pop(("poll", "waiting"), 0)
        assert stages == {
            ("prepare", "prepared"): 1,
            ("submit", "submitted"): 1,
            ("poll", "succeeded"): 1,
        }, mine
        assert len(mine) == 3 + polls


def test_status_says_writing_results_until_the_file_is_there(
    cluster: Cluster, clips: Clips
) -> None:
    """Every item finished but results.jsonl not yet written (its writer's claim is held):
    status says "writing results", not done, until a writer has written it."""
    entries = distinct_entries(clips, 2, prefix="wr")
    batch = cluster.submit(entries, *FILETRANS)  # no worker: items stay PENDING
    for row in cluster.rows(batch):
        assert walk(cluster.ledger, row.id, ItemState.SUCCEEDED, outputs={})
    assert cluster.ledger.claim_batch_close(batch, owner="elsewhere", lease_s=60)
    status = cluster.cli_json("status", batch)
    assert (status["done"], status["state"]) == (False, "writing results")
    assert "writing results" in cluster.cli("status", batch).stdout
    assert not (cluster.out_dir(batch) / "results.jsonl").exists()
    cluster.ledger.end_batch_close(batch, owner="elsewhere", written=False)
    cluster.worker(concurrency=1, queues="provider")
    cluster.beat()  # the sweeper, the safety net, writes it
    cluster.wait_done(batch, timeout_s=30)
    assert len(cluster.results(batch)) == 2
    assert cluster.cli_json("status", batch)["state"] == "done"


def test_racing_finishes_write_results_exactly_once(
    cluster: Cluster, clips: Clips, tmp_path: Path
) -> None:
    """Two workers finish a batch's last two items at the same moment, twenty times over:
    each time exactly one of them writes results.jsonl (neither both, nor neither)."""
    writes: list[str] = []

    class CountingSink:
        location = str(tmp_path)

        def write_text(self, name: str, text: str) -> str:
            writes.append(text)
            return name

    path = manifest(tmp_path / "race.jsonl", distinct_entries(clips, 2, prefix="race"))
    ledger = cluster.ledger
    for n in range(20):
        batch = f"race-{n}"
        ledger.ensure_batch(
            batch, kind="submit", out=str(tmp_path / batch), engine="dashscope", model="fun-asr"
        )
        ledger.sync_items(
            batch,
            seeds_for(
                load_manifest(path).entries, engine="dashscope", model="fun-asr", language=None
            ),
            engine="dashscope",
            model="fun-asr",
        )
        rows = ledger.list_items(batch)
        go = threading.Barrier(2)
        won: list[bool] = []

        def finish(row: Any, who: str, go: threading.Barrier, won: list[bool]) -> None:
            go.wait()
            walk(ledger, row.id, ItemState.SUCCEEDED, outputs={})
            won.append(close_batch(ledger, row.batch_id, CountingSink(), owner=who))

        threads = [
            threading.Thread(target=finish, args=(r, f"w{i}", go, won)) for i, r in enumerate(rows)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [False, True], (n, won)
        assert len(writes) == n + 1
        assert (ledger.batch(batch) or {})["done_at"] is not None


def test_item_commands_take_batch_slash_id(cluster: Cluster, clips: Clips) -> None:
    """dlq show/replay/purge and reprocess --item accept the BATCH/ID that dlq list prints;
    output is for people unless --json; status lists the models the items now use."""
    entries = distinct_entries(clips, 3, prefix="dl")
    batch = cluster.submit(entries, "--engine", "dashscope", "--model", "fun-asr")
    for row in cluster.rows(batch):  # no worker: straight to the dead-letter set
        assert cluster.ledger.fail(
            row.id, ItemState.PENDING, Failure("provider_error", "boom", True), dead=True
        )
    listed = cluster.cli("dlq", "list", "--batch", batch).stdout
    assert f"{batch}/dl000" in listed

    shown = cluster.cli("dlq", "show", f"{batch}/dl000").stdout
    assert not shown.lstrip().startswith("{")
    assert f"{batch}/dl000" in shown and "DEAD" in shown and "provider_error: boom" in shown
    data = cluster.cli_json("dlq", "show", f"{batch}/dl000")
    assert (data["id"], data["state"], len(data["attempts"])) == ("dl000", "DEAD", 1)
    missing = cluster.cli("dlq", "show", f"{batch}/nope", check=False)
    assert missing.returncode == 2 and f"no item {batch}/nope" in missing.stderr

    assert cluster.cli_json("dlq", "replay", f"{batch}/dl000")["replayed"] == 1
    assert cluster.cli_json("dlq", "purge", f"{batch}/dl001")["purged"] == 1
    again = cluster.cli_json(
        "reprocess",
        "--item",
        f"{batch}/dl001",
        "--item",
        f"{batch}/dl002",
        "--model",
        "qwen3-asr-flash-filetrans",
    )
    assert again["reprocessed"] == 2
    by_key = {r.key: r for r in cluster.rows(batch)}
    assert {k: (r.state.value, r.attempt) for k, r in by_key.items()} == {
        "dl000": ("PENDING", 2),
        "dl001": ("PENDING", 2),
        "dl002": ("PENDING", 2),
    }

    status = cluster.cli_json("status", batch)
    assert {(m["model"], m["items"]) for m in status["models"]} == {
        ("qwen3-asr-flash-filetrans", 2),
        ("fun-asr", 1),
    }
    assert status["model"] == "qwen3-asr-flash-filetrans, fun-asr"
    text = " ".join(cluster.cli("status", batch).stdout.split())  # however rich wrapped it
    assert "qwen3-asr-flash-filetrans ×2" in text and "fun-asr ×1" in text
