"""The outbox on a real SQLite ledger, delivered over real HTTP to a loopback receiver that
verifies every signature: retries, Retry-After, 410, the address policy, huge answers,
redirects, timeouts, claims."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from notify_support import SECRET, Receiver, endless, hang, payload, status
from support import walk

from pipeline.ledger import Failure, ItemSeed, Ledger, open_ledger, sqlite_url
from pipeline.notify import outbox
from pipeline.notify.delivery import deliverer
from pipeline.settings import NotifySettings, Settings
from pipeline.states import ItemState

FAST = (0.0, 0.05, 0.05)  # a short schedule: three tries within a tenth of a second


def settings(**notify: object) -> Settings:
    base: dict[str, object] = {"allow_private": True, "retry_schedule_s": FAST, "timeout_s": 2.0}
    return Settings(notify=NotifySettings(**{**base, **notify}), notify_secret=SECRET)


@pytest.fixture
def ledger(tmp_path: Path, notify_env: dict[str, str]) -> Ledger:
    return open_ledger(sqlite_url(tmp_path / "ledger.db"))


def finished_batch(
    ledger: Ledger,
    batch_id: str = "b-1",
    *,
    ok: int = 2,
    dead: int = 0,
    urls: list[str] | None = None,
) -> list[str]:
    """A batch whose items are all finished: ``ok`` SUCCEEDED (1.5 s each), ``dead`` DEAD."""
    ledger.ensure_batch(
        batch_id,
        kind="submit",
        out="/tmp/out",
        engine="local",
        model="tiny.en",
        options={"notify_urls": urls or []},
    )
    seeds = [ItemSeed(f"f{n}", n, f"/media/f{n}.wav", {}, f"fp{n}") for n in range(ok + dead)]
    ledger.sync_items(batch_id, seeds, engine="local", model="tiny.en")
    rows = ledger.list_items(batch_id)
    for row in rows[:ok]:
        assert walk(ledger, row.id, ItemState.SUCCEEDED, audio_duration_ms=1500)
    for row in rows[ok:]:
        assert ledger.fail(
            row.id, ItemState.PENDING, Failure("provider_error", "boom", True), dead=True
        )
    return [r.id for r in rows]


def test_batch_completed_once_with_counts(ledger: Ledger, receiver: Receiver) -> None:
    """Closing a batch writes one signed batch.completed; closing it again writes nothing."""
    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, ok=2, dead=1, urls=[url])
    s = settings()
    assert outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results="/r.jsonl")
    assert not outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results="/r.jsonl")
    assert ledger.batch("b-1")["done_at"] is not None  # type: ignore[index]
    report = deliverer(s, ledger.engine).flush(5)
    assert report.states == {"DELIVERED": 1}
    (got,) = receiver.at("/hook")
    assert got.ok and got.id.startswith("msg_")
    data = payload(got)["data"]
    assert payload(got)["type"] == "batch.completed"
    assert (data["counts"], data["total"], data["audio_s"], data["results"], data["cost"]) == (
        {"SUCCEEDED": 2, "DEAD": 1},
        3,
        3.0,
        "/r.jsonl",
        None,
    )


def test_503_twice_then_200_is_three_tries_of_one_message(
    ledger: Ledger, receiver: Receiver
) -> None:
    """Retried on the (short) schedule with one webhook-id, each try freshly signed."""
    url = receiver.answer("/flaky", status(503), status(503), status(200))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    started = time.monotonic()
    report = deliverer(s, ledger.engine).flush(10)
    took = time.monotonic() - started
    assert receiver.answered("/flaky") == [503, 503, 200]
    got = receiver.at("/flaky")
    assert len({d.id for d in got}) == 1 and all(d.ok for d in got)
    assert len({d.body for d in got}) == 1
    assert report.states == {"PENDING": 2, "DELIVERED": 1}
    (msg,) = outbox.list_messages(ledger.engine)
    assert (msg.state, msg.tries, msg.last_status) == ("DELIVERED", 3, 200)
    assert took < 3


def test_tries_stop_when_the_schedule_runs_out(ledger: Ledger, receiver: Receiver) -> None:
    """After the last try of the schedule the message is FAILED, with the last answer."""
    url = receiver.answer("/down", status(500))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(10)
    assert len(receiver.at("/down")) == len(FAST)
    (msg,) = outbox.list_messages(ledger.engine)
    assert (msg.state, msg.tries) == ("FAILED", 3)
    assert msg.last_error == "HTTP 500 after 3 tries"


def test_retry_after_is_honoured(ledger: Ledger, receiver: Receiver) -> None:
    """A 429 with Retry-After: 2 holds the next try back 2 s, not the schedule's 0.05 s."""
    url = receiver.answer("/busy", status(429, {"Retry-After": "2"}), status(200))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    d = deliverer(s, ledger.engine)
    assert d.flush(0.5).states == {"PENDING": 1}  # the retry is not due within 0.5 s
    (msg,) = outbox.list_messages(ledger.engine)
    assert msg.next_at is not None
    wait = (msg.next_at - datetime.now(UTC)).total_seconds()
    assert 1.0 < wait <= 2.0
    assert d.flush(5).states == {"DELIVERED": 1}
    first, second = receiver.at("/busy")
    assert second.id == first.id


def test_410_disables_the_endpoint(ledger: Ledger, receiver: Receiver) -> None:
    """410 Gone: the message is DISABLED, the endpoint recorded, and later events to it are
    written DISABLED and never sent; other endpoints still get theirs."""
    gone = receiver.answer("/gone", status(410))
    fine = receiver.answer("/fine", status(200))
    finished_batch(ledger, "b-1", urls=[gone, fine])
    finished_batch(ledger, "b-2", urls=[gone, fine])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    assert set(outbox.disabled_urls(ledger.engine)) == {gone}
    outbox.complete_batch(ledger.engine, "b-2", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    assert len(receiver.at("/gone")) == 1
    assert len(receiver.at("/fine")) == 2
    states = {(m.batch_id, m.url): m.state for m in outbox.list_messages(ledger.engine)}
    assert states[("b-1", gone)] == states[("b-2", gone)] == "DISABLED"
    assert states[("b-2", fine)] == "DELIVERED"


def test_private_address_refused_without_the_setting(ledger: Ledger, receiver: Receiver) -> None:
    """With notify.allow_private off (the default), a loopback endpoint is never contacted:
    the message fails at once, naming the setting; metadata addresses fail even with it on."""
    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, urls=[url, "http://169.254.169.254/latest/meta-data"])
    assert NotifySettings().allow_private is False
    s = settings(allow_private=False)
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    assert deliverer(s, ledger.engine).flush(5).states == {"FAILED": 2}
    assert receiver.at("/hook") == []
    errors = {m.url: m.last_error for m in outbox.list_messages(ledger.engine)}
    assert "notify.allow_private is false" in str(errors[url])
    assert "metadata" in str(errors["http://169.254.169.254/latest/meta-data"])


def test_a_huge_answer_is_not_read(ledger: Ledger, receiver: Receiver) -> None:
    """A 200 with a 200 MB body: delivered, and the connection dropped after a few KB."""
    sent: list[int] = []
    url = receiver.answer("/huge", endless(sent))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    started = time.monotonic()
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    assert time.monotonic() - started < 2
    receiver.wait("/huge", 1)
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sent and sent[0] < 20 * 1024**2  # socket buffers took some; nothing near 200 MB


def test_redirects_are_not_followed(ledger: Ledger, receiver: Receiver) -> None:
    """A 302 is a failed try (the Location is named), not a request somewhere else."""
    target = receiver.answer("/elsewhere", status(200))
    url = receiver.answer("/moved", status(302, {"Location": target}))
    finished_batch(ledger, urls=[url])
    s = settings(retry_schedule_s=(0.0,))
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    assert len(receiver.at("/moved")) == 1 and receiver.at("/elsewhere") == []
    (msg,) = outbox.list_messages(ledger.engine)
    assert msg.state == "FAILED" and "not followed" in str(msg.last_error)


def test_a_silent_endpoint_costs_one_timeout(ledger: Ledger, receiver: Receiver) -> None:
    """An endpoint that never answers is given notify.timeout_s, then tried later."""
    url = receiver.answer("/silent", hang(5), status(200))
    finished_batch(ledger, urls=[url])
    s = settings(timeout_s=0.5, retry_schedule_s=(0.0, 30.0))
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    started = time.monotonic()
    assert deliverer(s, ledger.engine).flush(1).states == {"PENDING": 1}
    assert time.monotonic() - started < 2
    (msg,) = outbox.list_messages(ledger.engine)
    assert "no answer within 0.5 s" in str(msg.last_error)


def test_two_deliverers_never_send_one_try_twice(ledger: Ledger, receiver: Receiver) -> None:
    """Eight deliverers racing over 20 messages: each message is sent exactly once."""
    url = receiver.answer("/hook", status(200))
    s = settings()
    for n in range(20):
        finished_batch(ledger, f"b-{n}", ok=1, urls=[url])
        outbox.complete_batch(ledger.engine, f"b-{n}", notify=s.notify, results=None)
    deliverers = [deliverer(s, ledger.engine) for _ in range(8)]
    threads = [threading.Thread(target=d.deliver_due, kwargs={"limit": 3}) for d in deliverers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in deliverers:
        d.flush(5)
    ids = [d.id for d in receiver.at("/hook")]
    assert len(ids) == len(set(ids)) == 20


def test_a_claim_that_is_never_recorded_runs_out(ledger: Ledger, receiver: Receiver) -> None:
    """A deliverer that died mid-try: the message is due again once its claim runs out, and
    the next try carries the same id."""
    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    (claimed,) = outbox.claim_due(ledger.engine, hold_s=0.3)
    assert outbox.claim_due(ledger.engine, hold_s=0.3) == []  # held
    time.sleep(0.35)
    assert deliverer(s, ledger.engine).flush(2).states == {"DELIVERED": 1}
    (got,) = receiver.at("/hook")
    assert got.id == claimed.id
    (msg,) = outbox.list_messages(ledger.engine)
    assert msg.tries == 2
    # The dead deliverer's late answer is not recorded over the delivered state.
    from pipeline.notify.policy import GiveUp

    assert outbox.record(ledger.engine, claimed, GiveUp("late"), status=None, error="late") is None


def test_dead_items_are_announced_once_per_sweep(ledger: Ledger, receiver: Receiver) -> None:
    """DEAD items become one batch.items_dead per batch listing their ids, noted in the same
    transaction, so the next sweep announces nothing again."""
    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, "b-1", ok=1, dead=3, urls=[url])
    finished_batch(ledger, "b-2", ok=0, dead=1, urls=[])  # nobody to tell: noted all the same
    s = settings()
    assert outbox.note_dead(ledger.engine, s.notify) == 4
    assert outbox.note_dead(ledger.engine, s.notify) == 0
    deliverer(s, ledger.engine).flush(5)
    (got,) = receiver.at("/hook")
    assert payload(got)["type"] == "batch.items_dead"
    assert payload(got)["data"] | {"console": None} == {
        "batch_id": "b-1",
        "count": 3,
        "ids": ["f1", "f2", "f3"],
        "console": None,
    }
    # A DEAD item given a new attempt that dies again is announced again.
    row = ledger.list_items("b-1", states=[ItemState.DEAD])[0]
    assert ledger.restart(row.id)
    assert ledger.fail(
        row.id, ItemState.PENDING, Failure("provider_error", "again", True), dead=True
    )
    assert outbox.note_dead(ledger.engine, s.notify) == 1


def test_dead_items_noted_by_an_older_process_are_not_announced_again(
    ledger: Ledger, receiver: Receiver
) -> None:
    """An item noted in notify_dead_noted by a process that did not mark the row (older than
    the column) is marked by the next sweep and not announced again; the others are."""
    from sqlalchemy import select

    from pipeline.ledger.tables import items, notify_dead_noted

    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, "b-1", ok=0, dead=3, urls=[url])
    old = ledger.list_items("b-1", states=[ItemState.DEAD])[0]
    with ledger.engine.begin() as conn:
        conn.execute(
            notify_dead_noted.insert().values(
                item_id=old.id, attempt=old.attempt, noted_at=datetime.now(UTC)
            )
        )
    s = settings()
    assert outbox.note_dead(ledger.engine, s.notify) == 2
    assert outbox.note_dead(ledger.engine, s.notify) == 0
    with ledger.engine.connect() as conn:
        marked = conn.execute(select(items.c.dead_noted).where(items.c.batch_id == "b-1"))
        assert list(marked.scalars()) == [old.attempt] * 3
    deliverer(s, ledger.engine).flush(5)
    (got,) = receiver.at("/hook")
    dead = [r.key for r in ledger.list_items("b-1", states=[ItemState.DEAD])]
    assert payload(got)["data"]["ids"] == [k for k in dead if k != old.key]


def test_replay_resends_with_the_same_id(ledger: Ledger, receiver: Receiver) -> None:
    """A FAILED message replayed starts its tries over and keeps its webhook-id."""
    url = receiver.answer("/hook", status(500), status(200))
    finished_batch(ledger, urls=[url])
    s = settings(retry_schedule_s=(0.0,))
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    (msg,) = outbox.list_messages(ledger.engine)
    assert msg.state == "FAILED"
    assert outbox.replay(ledger.engine, failed=True) == [msg.id]
    deliverer(s, ledger.engine).flush(5)
    assert receiver.answered("/hook") == [500, 200]
    first, second = receiver.at("/hook")
    assert first.id == second.id == msg.id
    assert json.loads(second.body) == json.loads(first.body)


def test_a_receiver_with_another_secret_rejects_the_signature(
    ledger: Ledger, receiver: Receiver
) -> None:
    """Signed with BULKSCRIBE_NOTIFY_SECRET: a receiver holding another secret refuses it."""
    from notify_support import OTHER_SECRET
    from standardwebhooks.webhooks import WebhookVerificationError

    receiver.secret = OTHER_SECRET
    url = receiver.answer("/hook", status(200))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    (got,) = receiver.at("/hook")
    assert isinstance(got.verified, WebhookVerificationError)


def test_schedule_run_started_once_per_batch(ledger: Ledger, receiver: Receiver) -> None:
    """A scheduled run's start is announced once per batch, even if its task runs twice."""
    from pipeline.notify.hooks import schedule_started

    url = receiver.answer("/hook", status(200))
    s = settings()
    for _ in range(2):
        with ledger.engine.begin() as conn:
            schedule_started(
                conn,
                s,
                schedule="nightly",
                batch_id="sched-nightly-1",
                items=7,
                source="s3://user:pw@bucket/in/",
                out="s3://bucket/out/x",
                urls=[url],
            )
    deliverer(s, ledger.engine).flush(5)
    (got,) = receiver.at("/hook")
    assert payload(got)["type"] == "schedule.run_started"
    data = payload(got)["data"]
    assert (data["schedule"], data["batch_id"], data["items"]) == ("nightly", "sched-nightly-1", 7)
    assert "pw" not in data["source"]


def test_notify_list_shows_disabled_endpoints(
    tmp_path: Path, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """`bulkscribe notify list --out DIR` names the endpoint a 410 disabled."""
    from notify_support import cli

    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    ledger = open_ledger(sqlite_url(out / ".bulkscribe" / "ledger.db"))
    url = receiver.answer("/gone", status(410))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    done = cli("notify", "list", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [m["state"] for m in doc["messages"]] == ["DISABLED"]
    assert [d["url"] for d in doc["disabled_endpoints"]] == [url]
    text = cli("notify", "list", "--out", str(out)).stdout
    assert f"disabled: {url}" in text


def test_replaying_a_disabled_message_by_id_enables_its_endpoint(
    ledger: Ledger, receiver: Receiver
) -> None:
    """An operator who replays a message a 410 disabled means it: the endpoint is enabled
    again and the message delivered; `--failed` alone never touches DISABLED ones."""
    url = receiver.answer("/back", status(410), status(200))
    finished_batch(ledger, urls=[url])
    s = settings()
    outbox.complete_batch(ledger.engine, "b-1", notify=s.notify, results=None)
    deliverer(s, ledger.engine).flush(5)
    (msg,) = outbox.list_messages(ledger.engine)
    assert msg.state == "DISABLED" and url in outbox.disabled_urls(ledger.engine)
    assert outbox.replay(ledger.engine, failed=True) == []
    assert outbox.replay(ledger.engine, [msg.id]) == [msg.id]
    assert outbox.disabled_urls(ledger.engine) == {}
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    assert receiver.answered("/back") == [410, 200]


def test_the_worker_close_writes_results_and_event_together(
    ledger: Ledger, receiver: Receiver, tmp_path: Path
) -> None:
    """close_batch (the worker that finishes the last item, or the sweeper) writes
    results.jsonl, marks the batch done and writes batch.completed in that one transaction;
    a second closer (the other worker of a race, the sweeper later) writes neither again."""
    from pipeline.flow.outputs import DirSink
    from pipeline.outputs.results import close_batch

    url = receiver.answer("/close", status(200))
    finished_batch(ledger, ok=2, urls=[url])
    s = settings()
    sink = DirSink(tmp_path / "out")
    assert close_batch(ledger, "b-1", sink, owner="worker-a", notify=s.notify)
    assert not close_batch(ledger, "b-1", sink, owner="sweeper", notify=s.notify)
    assert (tmp_path / "out" / "results.jsonl").is_file()
    assert [m.event_type for m in outbox.list_messages(ledger.engine)] == ["batch.completed"]
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    (got,) = receiver.at("/close")
    assert payload(got)["data"]["counts"] == {"SUCCEEDED": 2}


def priced_batch(ledger: Ledger, url: str) -> None:
    """Three SUCCEEDED items of a DashScope batch: 60 s and 30 s of fun-asr (the batch's
    model), 120 s of a line naming qwen3-asr-flash-filetrans; one FAILED item (not billed)."""
    ledger.ensure_batch(
        "b-1",
        kind="submit",
        out="/tmp/out",
        engine="dashscope",
        model="fun-asr",
        options={"notify_urls": [url]},
    )
    own = {"model": "qwen3-asr-flash-filetrans"}
    seeds = [
        ItemSeed("a", 1, "/m/a.wav", {}, "pa"),
        ItemSeed("b", 2, "/m/b.wav", own, "pb"),
        ItemSeed("c", 3, "/m/c.wav", {}, "pc"),
        ItemSeed("d", 4, "/m/d.wav", {}, "pd"),
    ]
    ledger.sync_items("b-1", seeds, engine="dashscope", model="fun-asr")
    a, b, c, d = ledger.list_items("b-1")
    for row, ms in ((a, 60_000), (b, 120_000), (c, 30_000)):
        assert walk(ledger, row.id, ItemState.SUCCEEDED, audio_duration_ms=ms)
    assert ledger.fail(d.id, ItemState.PENDING, Failure("not_media", "no", False))


@pytest.mark.parametrize(
    ("table", "cost", "currency"),
    [
        # 90 s x 0.0001 + 120 s x 0.0003 = 0.009 + 0.036
        ({"fun-asr": 0.0001, "qwen3-asr-flash-filetrans": 0.0003}, 0.045, "USD"),
        ({"fun-asr": 0.0001}, None, None),  # the second model has no price: unknown
        ({}, None, None),
    ],
)
def test_batch_completed_cost_from_the_price_table(
    ledger: Ledger,
    receiver: Receiver,
    tmp_path: Path,
    table: dict[str, float],
    cost: float | None,
    currency: str | None,
) -> None:
    """batch.completed's cost is the SUCCEEDED items' audio priced per model (each item by
    its own model), and null when a model it used has no price."""
    from pipeline.flow.outputs import DirSink
    from pipeline.outputs.results import close_batch
    from pipeline.planning.pricing import PriceTable
    from pipeline.settings import Price

    url = receiver.answer("/cost", status(200))
    priced_batch(ledger, url)
    s = settings().model_copy(update={"prices": {m: Price(per_second=r) for m, r in table.items()}})
    prices = PriceTable.of(s)
    sink = DirSink(tmp_path / "out")
    assert close_batch(ledger, "b-1", sink, owner="w", notify=s.notify, prices=prices)
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    (got,) = receiver.at("/cost")
    data = payload(got)["data"]
    assert (data["audio_s"], data["currency"]) == (210.0, currency)
    assert data["cost"] == (None if cost is None else pytest.approx(cost))


def test_schedule_run_started_commits_with_the_batch_or_not_at_all(
    ledger: Ledger, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled run's batch and its schedule.run_started are one transaction: a crash
    right after the event row is written (before the commit) leaves neither; the next fire
    writes both."""
    from types import SimpleNamespace

    from sqlalchemy import func, select

    from pipeline.ledger.tables import batches, notify_outbox
    from pipeline.settings import DistributedSettings, ScheduleSettings
    from workers.schedules import start_scheduled_run

    url = receiver.answer("/sched", status(200))
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.wav").write_bytes(b"x")
    sched = ScheduleSettings(
        name="nightly", source=f"file://{src}/", out=str(tmp_path / "out"), notify_urls=(url,)
    )
    s = settings().model_copy(update={"distributed": DistributedSettings(schedules=(sched,))})
    wctx = SimpleNamespace(settings=s, ledger=ledger)
    real = outbox.enqueue

    def crash_after_writing(*args: object, **kwargs: object) -> list[str]:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(outbox, "enqueue", crash_after_writing)
    with pytest.raises(RuntimeError):
        start_scheduled_run(wctx, "nightly")
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(batches)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(notify_outbox)).scalar() == 0
    monkeypatch.setattr(outbox, "enqueue", real)
    batch_id = start_scheduled_run(wctx, "nightly")
    assert batch_id is not None and ledger.batch(batch_id) is not None
    assert [(m.event_type, m.batch_id) for m in outbox.list_messages(ledger.engine)] == [
        ("schedule.run_started", batch_id)
    ]
    deliverer(s, ledger.engine).flush(5)
    (got,) = receiver.at("/sched")
    assert got.ok and payload(got)["data"]["items"] == 1


def test_dead_items_are_written_with_their_move_and_batched(
    ledger: Ledger, receiver: Receiver
) -> None:
    """With the ledger's DEAD hook (as workers set it), each DEAD move writes its batch's
    batch.items_dead in its own transaction: 25 items dying make one untried message that
    lists them all (no sweep needed), delivered once after the window; an item dying after
    that try makes a new message."""
    from functools import partial

    url = receiver.answer("/dead", status(200))
    s = settings(dead_window_s=0.2)
    ledger.on_dead = partial(outbox.add_dead, notify=s.notify)
    ids = finished_batch(ledger, "b-1", ok=0, dead=25, urls=[url])
    (msg,) = outbox.list_messages(ledger.engine)
    assert (msg.event_type, msg.tries, msg.state) == ("batch.items_dead", 0, "PENDING")
    assert json.loads(msg.body)["data"]["ids"] == [f"f{n}" for n in range(25)]
    assert outbox.note_dead(ledger.engine, s.notify) == 0  # noted with the move
    # First tried a window after the first item died, so the others join it.
    assert msg.next_at is not None and (msg.next_at - msg.created_at).total_seconds() == 0.2
    time.sleep(0.25)
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    (got,) = receiver.at("/dead")
    assert got.ok and payload(got)["data"]["count"] == 25
    # A new attempt of one of them dies again: a new message, since the first was tried.
    assert ledger.restart(ids[0])
    assert ledger.fail(
        ids[0], ItemState.PENDING, Failure("provider_error", "again", True), dead=True
    )
    time.sleep(0.25)
    assert deliverer(s, ledger.engine).flush(5).states == {"DELIVERED": 1}
    assert [payload(d)["data"]["ids"] for d in receiver.at("/dead")] == [
        [f"f{n}" for n in range(25)],
        ["f0"],
    ]


def test_a_dead_move_and_its_event_roll_back_together(ledger: Ledger, receiver: Receiver) -> None:
    """A crash inside the DEAD transaction, after the event row is written: the item is not
    DEAD and no event exists; nothing is announced for a move that did not happen."""
    url = receiver.answer("/dead", status(200))
    s = settings()
    finished_batch(ledger, "b-1", ok=0, dead=0, urls=[url])
    ledger.sync_items("b-1", [ItemSeed("x", 1, "/m/x.wav", {}, "px")], engine="local", model="m")
    (row,) = ledger.list_items("b-1")

    def crash(conn: object, item_id: str) -> None:
        outbox.add_dead(conn, item_id, notify=s.notify)  # type: ignore[arg-type]
        raise RuntimeError("killed before the commit")

    ledger.on_dead = crash
    with pytest.raises(RuntimeError):
        ledger.fail(row.id, ItemState.PENDING, Failure("provider_error", "boom", True), dead=True)
    assert ledger.get(row.id).state is ItemState.PENDING  # type: ignore[union-attr]
    assert outbox.list_messages(ledger.engine) == []
