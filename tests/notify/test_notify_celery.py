"""The bulkscribe.notify task under real Celery workers (Redis, PostgreSQL, the DashScope
emulator, S3 through moto, as in tests/distributed): a distributed batch announces itself
to a loopback receiver that verifies every delivery with the ``standardwebhooks`` library,
once, and still once per webhook-id when the worker delivering it is killed mid-try."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))

import dist_support
from dist_support import Clips, Cluster, distinct_entries, wait_until
from notify_support import SECRET, Receiver, hang, payload, status
from sqlalchemy import text

from pipeline.notify import outbox

# The distributed suite's fixtures, registered here under their own names.
clips = dist_support.clips
cluster = dist_support.cluster
emulator = dist_support.emulator
ledger = dist_support.ledger
moto_url = dist_support.moto_url
pg_url = dist_support.pg_url
redis_server = dist_support.redis_server

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]

FILETRANS = ("--engine", "dashscope", "--model", "qwen3-asr-flash-filetrans")
SYNC = ("--engine", "dashscope", "--model", "qwen3-asr-flash")  # the transcribe queue's


@pytest.fixture
def notifying(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with webhooks signed and loopback endpoints allowed; its outbox emptied
    after the test (the cluster's own teardown empties only the items and batches)."""
    cluster.env["BULKSCRIBE_NOTIFY_SECRET"] = SECRET
    cluster.env["BULKSCRIBE_NOTIFY__ALLOW_PRIVATE"] = "true"
    try:
        yield cluster
    finally:
        cluster.stop_all()
        with cluster.ledger.engine.begin() as conn:
            conn.execute(text("TRUNCATE notify_outbox, notify_endpoints, notify_dead_noted"))


def test_a_distributed_batch_sends_one_signed_batch_completed(
    notifying: Cluster, clips: Clips, receiver: Receiver
) -> None:
    """Three files on a real worker and beat: the batch's close writes batch.completed, the
    sweep queues bulkscribe.notify, and the receiver gets exactly one delivery, verified by
    standardwebhooks, with the counts, the audio and where results.jsonl is."""
    url = receiver.answer("/hook", status(200))
    notifying.worker(concurrency=2)
    notifying.beat()
    entries = distinct_entries(clips, 3, prefix="ntf")
    batch = notifying.submit(entries, *FILETRANS, "--notify", url)
    (got,) = receiver.wait("/hook", 1, timeout_s=180)
    rows = notifying.wait_done(batch)
    assert got.ok, got.verified
    doc = payload(got)
    assert doc["type"] == "batch.completed"
    data = doc["data"]
    assert (data["batch_id"], data["kind"], data["total"]) == (batch, "submit", 3)
    assert data["counts"] == {"SUCCEEDED": 3}
    assert data["audio_s"] == pytest.approx(sum(r.audio_duration_ms or 0 for r in rows) / 1000)
    assert data["results"] == str(notifying.out_dir(batch) / "results.jsonl")
    wait_until(
        lambda: [m.state for m in outbox.list_messages(notifying.ledger.engine)] == ["DELIVERED"],
        30,
        "the message recorded DELIVERED",
    )
    time.sleep(4)  # four more sweeps (one a second here) send nothing more
    assert len(receiver.at("/hook")) == 1


def test_a_worker_killed_mid_delivery_the_event_is_delivered_once_per_id(
    notifying: Cluster, clips: Clips, receiver: Receiver
) -> None:
    """The worker delivering batch.completed is SIGKILLed while the endpoint holds its
    request: the claim runs out, a fresh worker (queued by the next sweep) delivers it
    again with the same webhook-id, and it is recorded delivered once."""
    notifying.env["BULKSCRIBE_NOTIFY__TIMEOUT_S"] = "2"  # a claim lasts 2 + 5 s
    url = receiver.answer("/hook", hang(60), status(200))
    victim = notifying.worker(concurrency=2)
    notifying.beat()
    entries = distinct_entries(clips, 2, prefix="ntk")
    batch = notifying.submit(entries, *FILETRANS, "--notify", url)
    receiver.wait("/hook", 1, timeout_s=180)  # the first try is on the wire, unanswered
    victim.kill()
    notifying.worker(concurrency=2)
    got = receiver.wait("/hook", 2, timeout_s=120)
    wait_until(
        lambda: [m.state for m in outbox.list_messages(notifying.ledger.engine)] == ["DELIVERED"],
        30,
        "the message recorded DELIVERED",
    )
    got = receiver.at("/hook")
    assert all(d.ok for d in got) and len({d.id for d in got}) == 1
    assert receiver.answered("/hook", timeout_s=1)[-1] == 200
    assert [d.answered for d in got].count(200) == 1
    (msg,) = outbox.list_messages(notifying.ledger.engine)
    assert (msg.id, msg.tries) == (got[0].id, len(got))
    assert payload(got[-1])["data"]["batch_id"] == batch


def test_the_worker_closing_a_batch_queues_its_delivery_at_once(
    notifying: Cluster, clips: Clips, receiver: Receiver
) -> None:
    """No beat, so no sweeper: the worker that finishes the batch's last item commits
    batch.completed with the batch's close and queues bulkscribe.notify itself, so the
    receiver has it within a few seconds of that item's SUCCEEDED, once."""
    notifying.env["BULKSCRIBE_DISTRIBUTED__SWEEP_S"] = "3600"  # had beat run: hourly sweeps
    url = receiver.answer("/hook", status(200))
    notifying.worker(concurrency=2)
    entries = distinct_entries(clips, 3, prefix="nti")
    batch = notifying.submit(entries, *FILETRANS, "--notify", url)
    (got,) = receiver.wait("/hook", 1, timeout_s=180)
    received = datetime.now(UTC)
    rows = notifying.rows(batch)
    assert {r.state.value for r in rows} == {"SUCCEEDED"}
    last = max(r.finished_at for r in rows if r.finished_at is not None)
    lag_s = (received - last).total_seconds()
    print(f"batch.completed received {lag_s:.2f} s after the last item's SUCCEEDED")
    assert 0 < lag_s < 5, lag_s
    assert got.ok and payload(got)["data"]["counts"] == {"SUCCEEDED": 3}
    wait_until(
        lambda: [m.state for m in outbox.list_messages(notifying.ledger.engine)] == ["DELIVERED"],
        30,
        "the message recorded DELIVERED",
    )
    time.sleep(2)
    assert len(receiver.at("/hook")) == 1


def test_a_worker_killed_after_the_last_item_the_event_is_still_delivered_once(
    notifying: Cluster, clips: Clips, receiver: Receiver
) -> None:
    """No beat while the batch runs, and no worker on the provider queue: a sync model's
    items run on the transcribe queue, and the worker finishing the last item closes the
    batch (its batch.completed written in that transaction) and queues bulkscribe.notify,
    which nobody takes. It is SIGKILLed, and the message is lost with it (taken off the
    queue, as if the worker had died before sending it). Beat's sweeper and a fresh worker
    deliver the event all the same, exactly once."""
    url = receiver.answer("/hook", status(200))
    victim = notifying.worker(concurrency=2, queues="prepare,transcribe")
    entries = distinct_entries(clips, 2, prefix="ntl")
    batch = notifying.submit(entries, *SYNC, "--notify", url)
    wait_until(
        lambda: (notifying.ledger.batch(batch) or {}).get("done_at"),
        180,
        "the batch closed by its worker",
        on_timeout=lambda: notifying.report(batch),
    )
    victim.kill()
    broker = notifying.redis.client()
    queued = [json.loads(m)["headers"]["task"] for m in broker.lrange("provider", 0, -1)]
    assert queued == ["bulkscribe.notify"]  # the closer's, sent after the close committed
    broker.delete("provider")
    assert receiver.at("/hook") == []
    (msg,) = outbox.list_messages(notifying.ledger.engine)
    assert (msg.event_type, msg.state, msg.tries) == ("batch.completed", "PENDING", 0)
    notifying.worker(concurrency=2)
    notifying.beat()
    (got,) = receiver.wait("/hook", 1, timeout_s=120)
    assert got.ok and got.id == msg.id
    assert payload(got)["data"]["counts"] == {"SUCCEEDED": 2}
    time.sleep(4)  # more sweeps send nothing more
    assert len(receiver.at("/hook")) == 1
