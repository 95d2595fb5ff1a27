"""Provider faults (emulated) end in the designed states, and the dead-letter set works."""

from __future__ import annotations

import collections
from urllib.parse import urlsplit

import pytest
from dist_support import (
    Clips,
    Cluster,
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

FUNASR = ("--engine", "dashscope", "--model", "fun-asr")


def _logs(cluster: Cluster) -> str:
    return "\n".join(p.log.read_text(errors="replace") for p in cluster.procs)


def _start(cluster: Cluster, **env: str) -> None:
    cluster.env.update(env)
    cluster.worker(concurrency=2)
    cluster.beat()


def test_throttling_and_server_errors_are_retried(cluster: Cluster, clips: Clips) -> None:
    """With 30 % of API calls throttled and 20 % failing with 500, every item still
    succeeds through retries, and no file is submitted twice."""
    cluster.em_config(throttle_rate=0.3, error_rate=0.2)
    _start(cluster, BULKSCRIBE_RETRY__MAX_ATTEMPTS="12")
    batch = cluster.submit(distinct_entries(clips, 6, prefix="busy"), *FUNASR)
    rows = cluster.wait_done(batch, timeout_s=120)

    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    cluster.assert_submitted_once(rows)
    logs = _logs(cluster)
    assert "HTTP 429 Throttling" in logs and "HTTP 500 InternalError" in logs


def test_lost_tasks_are_submitted_again(cluster: Cluster, clips: Clips) -> None:
    """Tasks the provider loses (UNKNOWN) are submitted again and then succeed; each file is
    in exactly one task that was not lost."""
    cluster.em_config(lost_rate=0.5)
    _start(cluster, BULKSCRIBE_RETRY__MAX_ATTEMPTS="12", BULKSCRIBE_PROVIDER__BATCH_SIZE="1")
    batch = cluster.submit(distinct_entries(clips, 5, prefix="lost"), *FUNASR)
    rows = cluster.wait_done(batch, timeout_s=120)

    assert {r.state.value for r in rows} == {"SUCCEEDED"}, cluster.report(batch)
    fates = collections.defaultdict(list)
    for task in cluster.em_tasks():
        for url in task["file_urls"]:
            fates[urlsplit(url).path].append(task["fate"])
    assert set(fates) == {urlsplit(str(r.media_url)).path for r in rows}
    assert all(f.count("ok") == 1 and f[-1] == "ok" for f in fates.values()), fates
    assert sum(f.count("lost") for f in fates.values()) >= 1, fates


def test_stuck_tasks_are_given_up_then_dead(cluster: Cluster, clips: Clips) -> None:
    """Tasks stuck RUNNING are given up after poll.give_up_after_s and submitted again; when
    every try gets stuck, the items end DEAD with poll_timeout after max_attempts submissions."""
    cluster.em_config(stuck_rate=1.0)
    _start(cluster, BULKSCRIBE_RETRY__MAX_ATTEMPTS="2", BULKSCRIBE_POLL__GIVE_UP_AFTER_S="2")
    batch = cluster.submit(distinct_entries(clips, 3, prefix="stuck"), *FUNASR)
    rows = cluster.wait_done(batch, timeout_s=120)

    assert {(r.state.value, r.error_code) for r in rows} == {("DEAD", "poll_timeout")}
    sent = cluster.submissions()
    assert len(sent) == len(rows) and set(sent.values()) == {2}, sent
    assert {t["status"] for t in cluster.em_tasks()} == {"RUNNING"}
    dead = cluster.cli_json("dlq", "list", "--batch", batch)
    assert sorted(d["id"] for d in dead) == sorted(r.key for r in rows)


def test_failed_task_fails_items_without_retry(cluster: Cluster, clips: Clips) -> None:
    """A provider task that ends FAILED fails its items at once with provider_failed: one
    submission per file, no retries, no dead letters."""
    cluster.em_config(fail_rate=1.0)
    _start(cluster)
    batch = cluster.submit(distinct_entries(clips, 4, prefix="fail"), *FUNASR)
    rows = cluster.wait_done(batch, timeout_s=90)

    assert {(r.state.value, r.error_code) for r in rows} == {("FAILED", "provider_failed")}
    assert all(r.tries == 0 for r in rows)
    cluster.assert_submitted_once(rows)
    results = cluster.results(batch)
    assert {(r["status"], r["error"]["code"]) for r in results} == {("FAILED", "provider_failed")}
    assert cluster.cli_json("dlq", "list", "--batch", batch) == []
    status = cluster.cli_json("status", batch)
    assert status["done"] and status["counts"] == {"FAILED": 4}


def test_dead_letters_listed_replayed_and_purged(cluster: Cluster, clips: Clips) -> None:
    """Retries exhausted on a failing provider → DEAD; `dlq list` shows them, `dlq purge`
    turns one into FAILED, and after the fault is fixed `dlq replay --all` makes the rest
    succeed."""
    cluster.em_config(error_rate=1.0)
    _start(cluster, BULKSCRIBE_RETRY__MAX_ATTEMPTS="3")
    entries = distinct_entries(clips, 4, prefix="dlq")
    batch = cluster.submit(entries, *FUNASR)
    rows = cluster.wait_done(batch, timeout_s=90)

    assert {(r.state.value, r.error_code) for r in rows} == {("DEAD", "provider_error")}
    assert cluster.em_tasks() == []  # every submit was refused before a task existed
    assert [r["status"] for r in cluster.results(batch)] == ["DEAD"] * 4
    dead = cluster.cli_json("dlq", "list")
    assert sorted(d["id"] for d in dead) == [e["id"] for e in entries]
    assert {d["code"] for d in dead} == {"provider_error"}

    purged_item = dead[0]["item"]
    assert cluster.cli_json("dlq", "purge", purged_item)["purged"] == 1
    purged = cluster.ledger.get(purged_item)
    assert purged is not None and purged.state.value == "FAILED"
    assert "purged" in str(purged.error_message)
    # The batch's results.jsonl is written again with the purged item FAILED.
    wait_until(
        lambda: "FAILED" in {r["status"] for r in cluster.results(batch)},
        30,
        "results.jsonl to show the purge",
    )
    assert len(cluster.cli_json("dlq", "list")) == 3

    cluster.em_config(error_rate=0)
    replayed = cluster.cli_json("dlq", "replay", "--all")
    assert replayed["replayed"] == 3
    rows = cluster.wait_done(batch, timeout_s=90)
    states = {r.key: r.state.value for r in rows}
    assert sorted(states.values()) == ["FAILED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]
    assert cluster.cli_json("dlq", "list") == []
    replayed_rows = [r for r in rows if r.state.value == "SUCCEEDED"]
    assert all(r.attempt == 2 for r in replayed_rows)
    cluster.assert_submitted_once(replayed_rows)
    results = {r["id"]: r["status"] for r in cluster.results(batch)}
    assert results == states
    assert all((cluster.out_dir(batch) / f"{r.key}.json").is_file() for r in replayed_rows)
