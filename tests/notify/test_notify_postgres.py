"""Distributed notifications at the ledger level, on a real PostgreSQL: the beat sweeper
closes a batch and writes its batch.completed in one transaction, notes DEAD items once,
and concurrent deliverers (SKIP LOCKED claims) send every try exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from notify_support import SECRET, Receiver, payload, status
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from support import scratch_database, walk

from pipeline.flow.outputs import DirSink
from pipeline.flow.policy import SchedulePolicy, Scheduler
from pipeline.ledger import Failure, ItemSeed, Ledger, open_ledger
from pipeline.ledger.tables import batches
from pipeline.notify import outbox
from pipeline.notify.delivery import deliverer
from pipeline.settings import NotifySettings, Settings
from pipeline.states import ItemState

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_ledger() -> Iterator[Ledger]:
    """A database of this module's own, migrated to head (0005 included), dropped after."""
    with scratch_database("bulkscribe_notify") as url:
        ledger = open_ledger(url)
        yield ledger
        ledger.engine.dispose()


def settings() -> Settings:
    return Settings(
        notify=NotifySettings(allow_private=True, retry_schedule_s=(0.0, 0.05), timeout_s=2.0),
        notify_secret=SECRET,
    )


def batch(ledger: Ledger, url: str, *, ok: int, dead: int) -> str:
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    ledger.ensure_batch(
        batch_id,
        kind="submit",
        out="/tmp/x",
        engine="dashscope",
        model="fun-asr",
        options={"notify_urls": [url]},
    )
    ledger.sync_items(
        batch_id,
        [ItemSeed(f"f{n}", n, f"/m/f{n}.wav", {}, f"p{n}") for n in range(ok + dead)],
        engine="dashscope",
        model="fun-asr",
    )
    rows = ledger.list_items(batch_id)
    for row in rows[:ok]:
        walk(ledger, row.id, ItemState.SUCCEEDED, audio_duration_ms=2000)
    for row in rows[ok:]:
        ledger.fail(
            row.id, ItemState.PENDING, Failure("provider_error", "gave up", True), dead=True
        )
    return batch_id


def test_the_sweep_closes_the_batch_and_its_event_together(
    pg_ledger: Ledger,
    receiver: Receiver,
    tmp_path: Path,
    notify_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real sweep over a finished batch: results.jsonl written, the batch done and one
    batch.completed plus one batch.items_dead in the outbox; the notify task it queues
    delivers them; a second sweep adds nothing."""
    import workers.sweeper as sweeper

    url = receiver.answer("/hook", status(200))
    batch_id = batch(pg_ledger, url, ok=2, dead=2)
    s = settings()
    queued: list[int] = []
    monkeypatch.setattr(sweeper, "send_notify", lambda _w: queued.append(1))
    wctx: Any = SimpleNamespace(
        settings=s,
        ledger=pg_ledger,
        flow=SimpleNamespace(sinks=lambda _b: DirSink(tmp_path), owner="sweeper:test"),
        redis=SimpleNamespace(llen=lambda _q: 0, exists=lambda _k: 1, set=lambda *_a: True),
        scheduler=Scheduler(SchedulePolicy.from_settings(s), pg_ledger),
    )
    first = sweeper._sweep(wctx)
    assert (first["closed"], first["dead_noted"], first["notify_due"]) == (1, 2, 2)
    # The sweep's metrics: items by state (read from item_counts) as counting them says.
    counted = pg_ledger.counts(None)
    gauges = {
        state.value: REGISTRY.get_sample_value("bulkscribe_items", {"state": state.value})
        for state in ItemState
    }
    assert gauges == {state.value: counted.get(state.value, 0) for state in ItemState}
    assert counted["DEAD"] >= 2
    assert queued == [1] and (tmp_path / "results.jsonl").is_file()
    second = sweeper._sweep(wctx)
    assert (second["closed"], second["dead_noted"]) == (0, 0)
    report = deliverer(s, pg_ledger.engine).drain(30)  # what the bulkscribe.notify task runs
    assert report.states == {"DELIVERED": 2}
    got = {payload(d)["type"]: payload(d)["data"] for d in receiver.at("/hook")}
    assert all(d.ok for d in receiver.at("/hook"))
    assert got["batch.completed"]["counts"] == {"SUCCEEDED": 2, "DEAD": 2}
    assert got["batch.completed"]["results"] == str(tmp_path / "results.jsonl")
    assert got["batch.items_dead"] == {
        "batch_id": batch_id,
        "count": 2,
        "ids": ["f2", "f3"],
        "console": None,
    }


def test_event_rolls_back_with_the_batch(
    pg_ledger: Ledger, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """announce_completed inside a transaction that fails: neither done_at nor the event."""
    url = receiver.answer("/hook", status(200))
    batch_id = batch(pg_ledger, url, ok=1, dead=0)
    with pytest.raises(RuntimeError), pg_ledger.engine.begin() as conn:
        conn.execute(
            update(batches).where(batches.c.id == batch_id).values(done_at=outbox._utcnow())
        )
        assert outbox.announce_completed(conn, batch_id, notify=settings().notify, results=None)
        raise RuntimeError("crash before commit")
    with pg_ledger.engine.connect() as conn:
        assert (
            conn.execute(select(batches.c.done_at).where(batches.c.id == batch_id)).scalar() is None
        )
    assert outbox.list_messages(pg_ledger.engine, batch_id=batch_id) == []


def test_concurrent_deliverers_send_each_try_once(
    pg_ledger: Ledger, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """Ten deliverers on ten connections racing over 40 messages: 40 requests, 40 ids."""
    url = receiver.answer("/race", status(200))
    s = settings()
    for _ in range(40):
        b = batch(pg_ledger, url, ok=1, dead=0)
        assert outbox.complete_batch(pg_ledger.engine, b, notify=s.notify, results=None)
    barrier = threading.Barrier(10)

    def run() -> None:
        d = deliverer(s, pg_ledger.engine)
        barrier.wait()
        while d.deliver_due(limit=3).tries:
            pass

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [d.id for d in receiver.at("/race")]
    assert len(ids) == len(set(ids)) == 40


def test_a_scheduled_run_announces_its_start_to_its_endpoints(
    pg_ledger: Ledger, receiver: Receiver, tmp_path: Path, notify_env: dict[str, str]
) -> None:
    """A schedule's notify_urls hear schedule.run_started once per batch, and the batch
    keeps them for its later events."""
    from pipeline.settings import DistributedSettings, ScheduleSettings
    from workers.schedules import start_scheduled_run

    url = receiver.answer("/sched", status(200))
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b.mp3", "notes.txt"):
        (src / name).write_bytes(b"x")
    sched = ScheduleSettings(
        name="nightly", source=f"file://{src}/", out=str(tmp_path / "out"), notify_urls=(url,)
    )
    s = Settings(
        distributed=DistributedSettings(schedules=(sched,)),
        notify=settings().notify,
        notify_secret=SECRET,
    )
    wctx: Any = SimpleNamespace(settings=s, ledger=pg_ledger)
    batch_id = start_scheduled_run(wctx, "nightly")
    assert batch_id is not None
    assert pg_ledger.batch(batch_id)["options"]["notify_urls"] == [url]  # type: ignore[index]
    deliverer(s, pg_ledger.engine).drain(10)
    (got,) = receiver.at("/sched")
    assert got.ok and payload(got)["type"] == "schedule.run_started"
    data = payload(got)["data"]
    assert (data["schedule"], data["batch_id"], data["items"]) == ("nightly", batch_id, 2)
    for row in pg_ledger.list_items(batch_id):  # leave nothing due for the module's sweeps
        pg_ledger.fail(
            row.id, row.state, Failure.permanent("internal", "not transcribed in this test")
        )


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own (submit queues its first steps there)."""
    import socket
    import subprocess
    import time

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(300):
        try:
            if client.ping():
                break
        except redis.RedisError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.redis
def test_submit_notify_urls_hear_the_batch_close(
    pg_ledger: Ledger,
    redis_url: str,
    receiver: Receiver,
    tmp_path: Path,
    notify_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`submit --notify URL` keeps the endpoint with the batch; when its items are finished
    the sweep's batch.completed goes there."""
    import json

    from notify_support import cli

    import workers.sweeper as sweeper
    from workers.context import BatchSinks

    url = receiver.answer("/submit", status(200))
    media = tmp_path / "a.wav"
    media.write_bytes(b"RIFF")
    env = {
        "BULKSCRIBE_DATABASE_URL": str(pg_ledger.engine.url.render_as_string(False)),
        "BULKSCRIBE_BROKER_URL": redis_url,
    }
    done = cli(
        "submit", str(media), "--out", str(tmp_path / "out"), "--notify", url, "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    batch_id = json.loads(done.stdout)["batch_id"]
    assert pg_ledger.batch(batch_id)["options"]["notify_urls"] == [url]  # type: ignore[index]
    for row in pg_ledger.list_items(batch_id):
        walk(pg_ledger, row.id, ItemState.SUCCEEDED, audio_duration_ms=1000)
    monkeypatch.setattr(sweeper, "send_notify", lambda _w: None)
    s = settings()
    wctx: Any = SimpleNamespace(
        settings=s,
        ledger=pg_ledger,
        flow=SimpleNamespace(sinks=BatchSinks(pg_ledger, s), owner="sweeper:test"),
        redis=SimpleNamespace(llen=lambda _q: 0, exists=lambda _k: 1, set=lambda *_a: True),
        scheduler=Scheduler(SchedulePolicy.from_settings(s), pg_ledger),
    )
    assert sweeper._sweep(wctx)["closed"] >= 1  # with batches earlier tests left open
    assert pg_ledger.batch(batch_id)["done_at"] is not None  # type: ignore[index]
    assert (tmp_path / "out" / "results.jsonl").is_file()
    deliverer(s, pg_ledger.engine).drain(10)
    (got,) = receiver.at("/submit")
    assert got.ok
    data = payload(got)["data"]
    assert (data["batch_id"], data["kind"], data["counts"]) == (
        batch_id,
        "submit",
        {"SUCCEEDED": 1},
    )


def dying_batch(ledger: Ledger, url: str, n: int) -> tuple[str, list[str]]:
    """A batch of ``n`` PENDING items (keys f0, f1, ...) telling ``url``."""
    batch_id = batch(ledger, url, ok=0, dead=0)
    seeds = [ItemSeed(f"f{i}", i, f"/m/f{i}.wav", {}, f"p{i}") for i in range(n)]
    ledger.sync_items(batch_id, seeds, engine="dashscope", model="fun-asr")
    return batch_id, [r.id for r in ledger.list_items(batch_id)]


def test_items_dying_at_once_are_announced_once_each_in_few_deliveries(
    pg_ledger: Ledger,
    receiver: Receiver,
    notify_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight threads move 40 items to DEAD while a deliverer keeps claiming: every id is in
    exactly one delivery, and the deliveries are few (the window batches them)."""
    from functools import partial

    url = receiver.answer("/dying", status(200))
    s = settings().model_copy(
        update={"notify": settings().notify.model_copy(update={"dead_window_s": 1.0})}
    )
    monkeypatch.setattr(pg_ledger, "on_dead", partial(outbox.add_dead, notify=s.notify))
    _, ids = dying_batch(pg_ledger, url, 40)
    done = threading.Event()

    def kill(part: list[str]) -> None:
        for item_id in part:
            assert pg_ledger.fail(
                item_id, ItemState.PENDING, Failure("provider_error", "x", True), dead=True
            )

    def deliver() -> None:
        d = deliverer(s, pg_ledger.engine)
        while not done.is_set():
            d.deliver_due()
            time.sleep(0.01)

    runner = threading.Thread(target=deliver)
    runner.start()
    killers = [threading.Thread(target=kill, args=(ids[k::8],)) for k in range(8)]
    for t in killers:
        t.start()
    for t in killers:
        t.join(60)
    done.set()
    runner.join(60)
    time.sleep(1.1)
    deliverer(s, pg_ledger.engine).flush(10)
    got = receiver.at("/dying")
    listed = [i for d in got for i in payload(d)["data"]["ids"]]
    assert sorted(listed) == sorted(f"f{n}" for n in range(40))  # each once
    assert all(d.ok for d in got) and len({d.id for d in got}) == len(got) <= 4
    assert outbox.note_dead(pg_ledger.engine, s.notify) == 0


def test_killed_right_after_the_dead_move_the_event_is_still_delivered(
    pg_ledger: Ledger, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """A process that moves an item to DEAD and is SIGKILLed the instant the move commits
    (no sweep, no delivery attempted) leaves its batch.items_dead in the outbox; another
    process delivers it, once."""
    import os
    import signal
    import subprocess
    import sys

    url = receiver.answer("/killed", status(200))
    batch_id, (item_id,) = dying_batch(pg_ledger, url, 1)
    script = (
        "import os, signal, sys\n"
        "from functools import partial\n"
        "from pipeline.ledger import Failure, open_ledger\n"
        "from pipeline.notify.outbox import add_dead\n"
        "from pipeline.settings import NotifySettings\n"
        "from pipeline.states import ItemState\n"
        "led = open_ledger(sys.argv[1])\n"
        "led.on_dead = partial(add_dead, notify=NotifySettings(dead_window_s=0))\n"
        "failure = Failure('provider_error', 'x', True)\n"
        "assert led.fail(sys.argv[2], ItemState.PENDING, failure, dead=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    db = pg_ledger.engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", script, db, item_id],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert pg_ledger.get(item_id).state is ItemState.DEAD  # type: ignore[union-attr]
    s = settings()
    assert deliverer(s, pg_ledger.engine).flush(10).states == {"DELIVERED": 1}
    assert deliverer(s, pg_ledger.engine).flush(1).states == {}
    (got,) = receiver.at("/killed")
    assert got.ok and payload(got)["data"] == {
        "batch_id": batch_id,
        "count": 1,
        "ids": ["f0"],
        "console": None,
    }
