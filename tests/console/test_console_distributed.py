"""The console over a running fleet: real Celery workers (the distributed suite's cluster:
its own Redis, a scratch PostgreSQL database, the DashScope emulator over HTTP, S3 through
moto's server), watched in Chromium. The Fleet page and ``/api/fleet`` name the workers
and their queues, a queue's depth and the provider tasks in flight; a batch's page follows
the batch over server-sent events until every item is done; an item whose audio lives in S3
plays it from a presigned URL and seeks to a clicked sentence."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import EXE, _env, shot, start_console
from support import say

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
import dist_support as dist
from dist_support import MEDIA_BUCKET, Clips, Cluster, distinct_entries
from support import s3_client, wait_until

# The distributed suite's fixtures, by name (its conftest.py is not loaded for this directory).
redis_server, pg_url, ledger, moto_url = dist.redis_server, dist.pg_url, dist.ledger, dist.moto_url
emulator, clips, cluster = dist.emulator, dist.clips, dist.cluster

FLEET = (
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
)


def fleet_test(test: Any) -> Any:
    """Marks a test that runs on the cluster (real workers, Redis, PostgreSQL, moto)."""
    for mark in FLEET:
        test = mark(test)
    return test


@pytest.fixture
def fleet_console(cluster: Cluster) -> Iterator[str]:
    """A console over the cluster's ledger and broker (no token: loopback only)."""
    env = {
        "BULKSCRIBE_DATABASE_URL": cluster.env["BULKSCRIBE_DATABASE_URL"],
        "BULKSCRIBE_BROKER_URL": cluster.env["BULKSCRIBE_BROKER_URL"],
    }
    proc, url = start_console(env=env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fleet_rows(page: Any) -> dict[str, dict[str, str]]:
    rows = {}
    for row in page.locator("table.workers tbody tr").all():
        rows[row.get_attribute("data-worker")] = {
            "queues": row.locator("td.queues").inner_text(),
            "running": row.locator("td.running").inner_text(),
        }
    return rows


@fleet_test
def test_fleet_page_shows_real_workers(
    cluster: Cluster, clips: Clips, fleet_console: str, page: Any
) -> None:
    """Before any worker runs, the prepare queue holds the submitted batch's messages and no
    worker answers; with two workers on different queues, the page and ``/api/fleet`` name
    each with its queues, count the provider tasks in flight while the emulator holds
    them (back to 0 when the batch is done), and measure the provider requests the workers
    make per second (submissions and polls, counted in Redis) beside the configured limit."""
    cluster.em_config(latency_s=4.0)  # each provider task stays RUNNING for 4 s
    entries = distinct_entries(clips, 4)
    batch = cluster.submit(entries, "--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")
    waiting = int(cluster.redis.client().llen("prepare"))
    assert waiting == len(entries)

    page.goto(f"{fleet_console}/fleet")
    assert page.locator('[data-queue="prepare"] .n').inner_text() == str(waiting)
    assert "No worker answered" in page.locator("main").inner_text()
    assert page.locator("#inflight").inner_text() == "0"
    assert page.locator("#rate").inner_text() == "0.00"  # no provider request yet
    shot(page, "fleet-queued")

    cluster.worker(concurrency=2, queues="prepare,transcribe")
    cluster.worker(concurrency=2, queues="provider")
    api = httpx.Client(base_url=fleet_console, timeout=30)

    def busy() -> dict[str, Any] | None:
        fleet = api.get("/api/fleet").json()
        return fleet if fleet["provider_inflight"] > 0 and len(fleet["workers"]) == 2 else None

    fleet = wait_until(busy, 90, "provider tasks in flight", every_s=0.3)
    by_queues = {tuple(w["queues"]): w["name"] for w in fleet["workers"]}
    assert set(by_queues) == {("prepare", "transcribe"), ("provider",)}
    assert re.match(r"^w0-[0-9a-f]{6}@", by_queues[("prepare", "transcribe")])
    assert re.match(r"^w1-[0-9a-f]{6}@", by_queues[("provider",)])
    assert set(fleet["queues"]) == {"prepare", "provider", "transcribe"}
    # The limit is the console's own provider.requests_per_s (the default here; the workers
    # run with 200). The measured rate counts at least the in-flight task's submission.
    assert fleet["provider_rate_limit_per_s"] == 10.0
    assert 0 < fleet["provider_rate_per_s"] < 200, fleet

    asked = time.monotonic()
    assert len(api.get("/api/fleet").json()["workers"]) == 2
    took = time.monotonic() - asked
    # One ping (a 1 s timeout), then four questions that end when both workers answered.
    assert took < 5, took
    print(f"GET /api/fleet with 2 workers: {took * 1000:.0f} ms")

    page.goto(f"{fleet_console}/fleet")
    rows = _fleet_rows(page)
    assert rows[by_queues[("provider",)]]["queues"] == "provider"
    assert rows[by_queues[("prepare", "transcribe")]]["queues"] == "prepare, transcribe"
    assert int(page.locator("#inflight").inner_text()) >= 1
    assert float(page.locator("#rate").inner_text()) > 0
    shot(page, "fleet")

    cluster.wait_states(batch, lambda c: c == {"SUCCEEDED": len(entries)}, 120, "all done")
    page.goto(f"{fleet_console}/fleet")
    assert page.locator("#inflight").inner_text() == "0"
    assert page.locator('[data-queue="prepare"] .n').inner_text() == "0"
    assert len(_fleet_rows(page)) == 2
    print(f"provider requests over the last minute: {page.locator('#rate').inner_text()}/s")


@fleet_test
def test_batch_page_follows_a_running_batch(
    cluster: Cluster, clips: Clips, fleet_console: str, page: Any
) -> None:
    """A batch of eight runs on real workers (each provider task held 2 s by the emulator)
    while its page is open: the counts change over server-sent events, without a reload,
    through several states until all eight are SUCCEEDED and the batch is done; the page's
    items table follows them."""
    cluster.em_config(latency_s=2.0)
    entries = distinct_entries(clips, 8)
    cluster.worker(concurrency=2)
    cluster.beat()  # the sweeper closes the batch
    started = time.monotonic()
    batch = cluster.submit(entries, "--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")
    page.goto(f"{fleet_console}/batches/{batch}")
    page.evaluate("window.__marker = 'same page'")
    seen: list[str] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        counts = page.locator("#counts ul.counts").inner_text()
        if not seen or counts != seen[-1]:
            seen.append(counts)
        done = page.locator('#counts [data-state="SUCCEEDED"] .n')
        if done.count() and done.inner_text() == "8" and "ETA done" in _stats(page):
            break
        page.wait_for_timeout(150)
    elapsed = time.monotonic() - started
    assert page.locator('#counts [data-state="SUCCEEDED"] .n').inner_text() == "8", seen
    assert page.locator("#counts li").count() == 1  # nothing left in any other state
    assert "8 / 8 finished" in _stats(page) and "ETA done" in _stats(page)
    wait_until(  # the items table follows the counts too
        lambda: page.locator("table.items tbody .state").all_inner_texts() == ["SUCCEEDED"] * 8,
        10,
        "the items table to show every item SUCCEEDED",
    )
    assert page.evaluate("window.__marker") == "same page"  # never reloaded
    assert len(seen) >= 3, seen  # the page showed the batch on its way, not just its end
    assert elapsed > 4, elapsed  # it really ran while the page was open
    print(f"batch of 8: {elapsed:.1f} s, {len(seen)} distinct count snapshots on the page")
    shot(page, "batch-live-done")


def _stats(page: Any) -> str:
    return str(page.locator("#counts .stats").inner_text())


SECRET = "console-test-secret-key-never-shown"
ACCESS_KEY = "AKIACONSOLETEST00001"


@pytest.mark.s3
@pytest.mark.ffmpeg
@pytest.mark.model
def test_item_audio_from_s3(moto_url: str, tmp_path: Path, page: Any) -> None:
    """An embedded run over audio in S3 (moto's server): the Item page's player reads a
    presigned URL that serves the object's bytes, a clicked sentence seeks it, and the
    page holds no storage secret."""
    audio = say("The meeting starts at nine. Bring your notes.", tmp_path / "talk.wav")
    s3_client(moto_url).upload_file(str(audio), MEDIA_BUCKET, "console/talk.wav")
    manifest = tmp_path / "in.jsonl"
    manifest.write_text(f'{{"id": "talk", "source": "s3://{MEDIA_BUCKET}/console/talk.wav"}}\n')
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "BULKSCRIBE_S3_ENDPOINT_URL": moto_url,
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [str(EXE), "run", str(manifest), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(**env),
    )
    assert done.returncode == 0, done.stderr
    proc, url = start_console("--out", str(out), env=env)
    try:
        batch = httpx.get(f"{url}/api/batches").json()["batches"][0]["batch_id"]
        response = page.goto(f"{url}/items/{batch}/talk")
        html = response.text()
        assert SECRET not in html and SECRET not in response.headers.get(
            "content-security-policy", ""
        )
        src = page.locator("audio#player").get_attribute("src")
        assert src.startswith(f"{moto_url}/{MEDIA_BUCKET}/console/talk.wav?")
        assert "X-Amz-Signature=" in src
        served = httpx.get(src)
        assert served.status_code == 200 and served.content == audio.read_bytes()

        seeks = page.locator("button.seek")
        assert seeks.count() >= 2, page.locator("ol.transcript").inner_text()
        start = float(seeks.last.get_attribute("data-start"))
        assert start > 0.5
        wait_until(  # the player has read the file's header: it knows the duration
            lambda: page.evaluate("document.getElementById('player').readyState") >= 1,
            15,
            "the player to load the presigned audio",
        )
        before = page.evaluate("document.getElementById('player').currentTime")
        seeks.last.click()
        wait_until(
            lambda: (
                abs(page.evaluate("document.getElementById('player').currentTime") - start) < 0.6
            ),
            10,
            "the player to seek to the sentence",
        )
        assert before < 0.1
        shot(page, "item-s3-audio")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
