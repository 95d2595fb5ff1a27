"""Crashes: kill -9 of a worker in every stage, and a broker that restarts mid-batch."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dist_support import (
    Clips,
    Cluster,
    RedisServer,
    SlowFiles,
    distinct_entries,
)
from support import wait_until

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]


def _events(path: Path, name: str) -> list[dict[str, object]]:
    """The structured log lines called ``name`` in a worker's log."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


@pytest.mark.parametrize(
    ("stage", "pool"),
    [
        ("prepare", "prefork"),
        ("submit", "prefork"),
        ("poll", "prefork"),
        ("persist", "prefork"),
        ("submit", "threads"),
        ("poll", "threads"),
        ("persist", "threads"),
    ],
)
def test_kill_worker_in_stage(stage: str, pool: str, cluster: Cluster, clips: Clips) -> None:
    """A worker killed with SIGKILL in any stage: a fresh worker finishes every item, and
    each file reaches the provider exactly once. The provider stages are run twice: on a
    worker of every queue (prefork), and on a provider-only worker (threads, as
    ``--pool auto`` picks for it) beside a separate preparer."""
    entries = distinct_entries(clips, 5, prefix=stage)
    slow = None
    if stage == "prepare":
        # Sources behind a slow HTTP server hold the worker in PREPARING for a while.
        slow = SlowFiles(clips.files[0].parent, delay_s=2.5)
        for e in entries:
            e["source"] = f"{slow.url}/{Path(e['source']).name}"
    elif stage == "submit":
        cluster.em_config(submit_delay_s=3)  # the task exists; its id is still on the wire
    elif stage == "poll":
        cluster.em_config(latency_s=6)
    elif stage == "persist":
        cluster.em_config(result_delay_s=3)
    try:
        target = {
            "prepare": "PREPARING",
            "submit": "SUBMITTING",
            "poll": "SUBMITTED",
            "persist": "PERSISTING",
        }[stage]
        if stage == "submit":
            # Prepare everything first, so one Fun-ASR task carries all five files: the
            # reconciliation must then account for a task shared by several items.
            preparer = cluster.worker(concurrency=2, queues="prepare")
            batch = cluster.submit(entries, "--engine", "dashscope", "--model", "fun-asr")
            cluster.wait_states(
                batch, lambda c: c["PREPARED"] == len(entries), 60, "all items PREPARED"
            )
            preparer.stop()
        if pool == "threads":
            if stage != "submit":
                cluster.worker(concurrency=2, queues="prepare")
            victim = cluster.worker(queues="provider", pool="threads")
        else:
            victim = cluster.worker(concurrency=2)
        cluster.beat()
        if stage != "submit":
            batch = cluster.submit(entries, "--engine", "dashscope", "--model", "fun-asr")
        if stage == "submit":
            wait_until(
                lambda: cluster.em_tasks() and cluster.states(batch)["SUBMITTING"] == len(entries),
                60,
                "a submission on the wire",
                every_s=0.05,
                on_timeout=lambda: cluster.report(batch),
            )
        elif stage == "poll":
            # Every item submitted and polled at least once, none finished.
            cluster.wait_states(
                batch, lambda c: c["SUBMITTED"] == len(entries), 60, "all items SUBMITTED"
            )
            wait_until(lambda: all(r.polls for r in cluster.rows(batch)), 30, "first polls")
        else:
            cluster.wait_states(batch, lambda c: c[target] > 0, 60, f"an item {target}")
        caught = cluster.states(batch)[target]
        victim.kill()
        assert caught > 0
        cluster.em_config(submit_delay_s=0, result_delay_s=0, latency_s=0.3)
        fresh = cluster.worker(concurrency=2)
        rows = cluster.wait_done(batch, timeout_s=90)
    finally:
        if slow is not None:
            slow.close()

    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    cluster.assert_submitted_once(rows)
    assert all(len(cluster.ledger.attempts_of(r.id)) == 1 for r in rows)
    results = cluster.results(batch)
    assert [r["status"] for r in results] == ["SUCCEEDED"] * len(entries)
    if stage in ("prepare", "persist"):
        # The dead worker's claims were given back by the sweeper once their leases ran out.
        released = {str(e.get("was")) for e in _events(fresh.log, "lease.expired")}
        assert target in released
    if stage == "submit":
        # The cut-short submission was found in the provider's task list, not sent again.
        assert len(cluster.em_tasks()) == 1
        assert _events(fresh.log, "reconcile.found")


def test_broker_restart_mid_batch(cluster: Cluster, clips: Clips, tmp_path: Path) -> None:
    """The broker (our own redis-server) dies and comes back empty mid-batch: every item
    still finishes, the lost messages re-queued by the sweeper from the ledger."""
    broker = RedisServer(tmp_path / "broker")
    broker.start()
    env = {"BULKSCRIBE_BROKER_URL": broker.url}
    cluster.env.update(env)
    try:
        cluster.em_config(latency_s=2)
        cluster.worker(concurrency=2)
        cluster.beat()
        entries = distinct_entries(clips, 8, prefix="broker")
        batch = cluster.submit(entries, "--engine", "dashscope", "--model", "fun-asr")
        cluster.wait_states(
            batch, lambda c: c["SUBMITTED"] + c["PREPARED"] > 0, 60, "work in flight"
        )
        broker.stop()  # every queued message and the redbeat schedule are gone
        before = cluster.states(batch)
        time.sleep(3)  # workers and beat see the broker gone for a while
        broker.start()
        rows = cluster.wait_done(batch, timeout_s=120)
    finally:
        cluster.stop_all()
        broker.stop()

    assert before["SUCCEEDED"] < len(entries)
    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    cluster.assert_submitted_once(rows)
    assert "beat.broker_back" in (tmp_path / "beat.log").read_text()


def test_kill_worker_with_default_settings(cluster: Cluster, clips: Clips) -> None:
    """Shipped settings (lease, sweep, redispatch, polls: no overrides): of two workers on a
    12-file batch, one is killed with SIGKILL while it holds items. The items it held are
    taken up again once their lease (60 s, renewed while a step runs) lapses, and the batch
    finishes within 2.5 minutes of the kill, each file submitted once."""
    cluster.use_defaults()
    entries = distinct_entries(clips, 12, prefix="dflt")
    slow = SlowFiles(clips.files[0].parent, delay_s=2.0)  # prepares take a while
    for e in entries:
        e["source"] = f"{slow.url}/{Path(e['source']).name}"
    try:
        victim = cluster.worker(concurrency=2)
        cluster.beat()
        batch = cluster.submit(entries, *FILETRANS)
        cluster.wait_states(batch, lambda c: c["PREPARING"] == 2, 60, "the victim preparing")
        held = {r.key for r in cluster.rows(batch) if r.state.value == "PREPARING"}
        victim.kill()
        killed = time.monotonic()
        cluster.worker(concurrency=2)
        rows = cluster.wait_done(batch, timeout_s=150)
        took = time.monotonic() - killed
    finally:
        slow.close()

    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    cluster.assert_submitted_once(rows)
    assert all(len(cluster.ledger.attempts_of(r.id)) == 1 for r in rows)
    assert len(held) == 2 and took < 150
    assert [r["status"] for r in cluster.results(batch)] == ["SUCCEEDED"] * len(entries)


def test_broker_flushed_with_default_settings(cluster: Cluster, clips: Clips) -> None:
    """Shipped settings: the broker loses every queued message mid-batch (FLUSHALL, as a
    Redis restarted without persistence would). The sweeper notices the loss at its next
    sweep and queues the waiting work again at once (instead of after redispatch_s, 300 s):
    the batch finishes within about a minute of the loss, each file submitted once."""
    cluster.use_defaults()
    cluster.em_config(latency_s=1.0)
    workers = [cluster.worker(concurrency=2), cluster.worker(concurrency=2)]
    cluster.beat()
    entries = distinct_entries(clips, 12, prefix="flush")
    batch = cluster.submit(entries, *FILETRANS)
    cluster.wait_states(batch, lambda c: c["SUBMITTED"] + c["SUCCEEDED"] >= 3, 60, "work in flight")
    cluster.redis.client().flushall()
    flushed, flushed_at = time.monotonic(), datetime.now(UTC)
    before = cluster.states(batch)
    rows = cluster.wait_done(batch, timeout_s=120)
    took = time.monotonic() - flushed

    assert before["SUCCEEDED"] < len(entries)
    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    cluster.assert_submitted_once(rows)
    assert took < 90, took
    noticed = [
        e
        for w in workers
        for e in _events(w.log, "broker.lost")
        if datetime.fromisoformat(str(e["timestamp"])) >= flushed_at
    ]
    assert noticed, "the sweeper did not notice the loss"


FILETRANS = ("--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")
