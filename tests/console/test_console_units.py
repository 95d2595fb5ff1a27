"""The console's pure parts and the operations under it, on a real SQLite ledger: the
CANCELLED state's transitions, cancel against in-flight steps and provider tasks, sessions,
CSRF, cursors, progress arithmetic and the chart's geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import walk

from pipeline import operations
from pipeline.console import auth
from pipeline.console.charts import timing_chart
from pipeline.console.queries import (
    BadCursor,
    ItemFilter,
    decode_cursor,
    encode_cursor,
    items_page,
    summarize,
)
from pipeline.errors import FailureCode, PipelineError
from pipeline.ledger import Failure, ItemSeed, Ledger, open_ledger, sqlite_url
from pipeline.states import ALLOWED, TERMINAL, ItemState, can_move, can_start_attempt

BATCH = "b1"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
    led.ensure_batch(BATCH, kind="submit", out=str(tmp_path), engine="dashscope", model="fun-asr")
    seeds = [
        ItemSeed(k, i, f"/in/{k}.wav", {"source": f"/in/{k}.wav"}, "f")
        for i, k in enumerate(["a", "b", "c", "d"], 1)
    ]
    led.sync_items(BATCH, seeds, engine="dashscope", model="fun-asr")
    return led


def _row(ledger: Ledger, key: str):  # type: ignore[no-untyped-def]
    return ledger.list_items(BATCH, keys=[key])[0]


def test_cancelled_transitions() -> None:
    """Every unfinished state may become CANCELLED; CANCELLED is terminal and leaves only
    for a new attempt (PENDING); finished states cannot be cancelled."""
    assert ItemState.CANCELLED in TERMINAL and ItemState.CANCELLED.terminal
    for state in ItemState:
        assert can_move(state, ItemState.CANCELLED) is (state not in TERMINAL)
    assert ALLOWED[ItemState.CANCELLED] == frozenset()
    assert can_start_attempt(ItemState.CANCELLED, ItemState.PENDING)


def test_cancel_discards_in_flight_steps(ledger: Ledger) -> None:
    """A claimed item is cancelled under its worker: the worker's closing compare-and-set
    fails (its result is discarded), no claim takes a CANCELLED item, the provider tasks
    only cancelled items wait for are cancelled, and one the provider refuses is reported."""
    a, b, c = (_row(ledger, k) for k in "abc")
    claimed = ledger.claim(a.id, ItemState.PENDING, ItemState.PREPARING, owner="w1", lease_s=60)
    assert claimed is not None
    for row, task in ((b, "task-b"), (c, "task-c")):
        walk(ledger, row.id, ItemState.SUBMITTED, provider_task_id=task)
    asked: list[str] = []

    def cancel_task(task_id: str) -> None:
        asked.append(task_id)
        if task_id == "task-c":
            raise PipelineError(FailureCode.PROVIDER_REJECTED, "task is RUNNING")

    report = operations.cancel_batch(ledger, BATCH, actor="test", cancel_task=cancel_task)
    assert len(report.cancelled) == 4
    assert report.tasks_cancelled == ("task-b",) and report.tasks_running == ("task-c",)
    assert asked == ["task-b", "task-c"]
    # the worker that held a's claim finishes its step: too late
    assert not ledger.move(a.id, ItemState.PREPARING, ItemState.PREPARED, owner="w1")
    assert (
        ledger.claim(a.id, ItemState.PENDING, ItemState.PREPARING, owner="w2", lease_s=60) is None
    )
    row = _row(ledger, "a")
    assert row.state is ItemState.CANCELLED and row.error_code == "cancelled"
    assert ledger.attempts_of(row.id)[-1]["state"] == "CANCELLED"
    assert ledger.actions_of(item_id=row.id)[0]["action"] == "cancel"
    # reprocess starts a cancelled item again
    assert operations.reprocess(ledger, [row], actor="test") == [row.id]
    assert _row(ledger, "a").state is ItemState.PENDING


def test_cancel_leaves_shared_tasks(ledger: Ledger, tmp_path: Path) -> None:
    """A Fun-ASR task that also holds an item of another batch is not cancelled."""
    ledger.ensure_batch("b2", kind="submit", out=str(tmp_path), engine="dashscope", model="fun-asr")
    ledger.sync_items(
        "b2",
        [ItemSeed("z", 1, "/in/z.wav", {"source": "/in/z.wav"}, "f")],
        engine="dashscope",
        model="fun-asr",
    )
    for row in (_row(ledger, "a"), ledger.list_items("b2")[0]):
        walk(ledger, row.id, ItemState.SUBMITTED, provider_task_id="shared")
    asked: list[str] = []
    operations.cancel_batch(ledger, BATCH, actor="test", cancel_task=asked.append)
    assert asked == []


def test_sessions_and_csrf() -> None:
    access = auth.Access.build("tok", "view")
    assert auth.role_for_token(access, "tok") == auth.ADMIN
    assert auth.role_for_token(access, "view") == auth.VIEWER
    assert auth.role_for_token(access, "tok ") is None
    assert auth.bearer_role(access, "Bearer tok") == auth.ADMIN
    assert auth.bearer_role(access, "Basic tok") is None
    cookie = auth.new_session(access, auth.VIEWER, now=1000)
    session = auth.read_session(access, cookie, now=1001)
    assert session is not None and session.role == auth.VIEWER
    assert auth.read_session(access, cookie, now=1000 + auth.SESSION_S + 1) is None
    forged = cookie.replace("viewer", "operator", 1)
    assert auth.read_session(access, forged, now=1001) is None
    other = auth.Access.build("rotated", "view")
    assert auth.read_session(other, cookie, now=1001) is None  # a new token ends sessions
    token = auth.csrf_token(access, session)
    assert auth.csrf_ok(access, session, token)
    assert not auth.csrf_ok(access, session, "") and not auth.csrf_ok(access, session, "x")
    assert auth.safe_next("//evil.example/") == "/" and auth.safe_next("/batches/x") == "/batches/x"
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("::1")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("10.0.0.1")


def test_cursor_and_pages(ledger: Ledger) -> None:
    assert decode_cursor(encode_cursor(7, "a/b")) == (7, "a/b")
    with pytest.raises(BadCursor):
        decode_cursor("not-a-cursor")
    page, cursor = items_page(ledger, BATCH, ItemFilter(limit=3))
    assert [i["id"] for i in page] == ["a", "b", "c"] and cursor
    rest, end = items_page(ledger, BATCH, ItemFilter(limit=3, after=cursor))
    assert [i["id"] for i in rest] == ["d"] and end is None


def test_progress_arithmetic() -> None:
    """Throughput and ETA from counts and times alone."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    batch = {
        "id": "sched-nightly-20260101-0200",
        "kind": "schedule",
        "engine": "local",
        "model": "tiny.en",
        "out": "s3://key:secret@bucket/x",
        "created_at": created,
        "done_at": None,
    }
    now = created + timedelta(minutes=10)
    s = summarize(batch, {"SUCCEEDED": 30, "PENDING": 70}, {"SUCCEEDED": 3_600_000}, None, now)
    assert s["schedule"] == "nightly" and s["percent"] == 30.0
    assert s["items_per_min"] == 3.0 and s["eta_s"] == round(70 / (30 / 600))
    assert s["audio_done_h"] == 1.0 and s["realtime_x"] == 6.0
    assert "secret" not in s["out"]


def test_chart_geometry() -> None:
    chart = timing_chart(
        [
            {"stage": "prepare", "p50_s": 1.0, "p95_s": 2.0, "count": 3},
            {"stage": "transcribe", "p50_s": 4.0, "p95_s": 8.0, "count": 3},
        ]
    )
    widths = [(b["p50_w"], b["p95_w"]) for b in chart["bars"]]
    assert widths[1][1] == max(w for pair in widths for w in pair)
    assert widths[0][1] == pytest.approx(widths[1][1] / 4)
    assert timing_chart([])["bars"] == []


def test_page_reprocess_form(ledger: Ledger) -> None:
    """The confirmation page's form (CSRF token included) reprocesses an item with another
    model and key=value options, recorded with the operator as actor."""
    import re

    from starlette.testclient import TestClient

    from pipeline.console.app import Console, create_app
    from pipeline.settings import Settings

    row = _row(ledger, "a")
    ledger.fail(row.id, ItemState.PENDING, Failure.permanent("engine_failed", "boom"))
    console = Console(ledger=ledger, settings=Settings(), access=auth.Access.build(None, None))
    with TestClient(create_app(console), base_url="http://127.0.0.1") as client:
        page = client.get("/confirm", params={"action": "reprocess", "batch": BATCH, "item": "a"})
        assert page.status_code == 200 and 'name="model"' in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        form = {
            "csrf": csrf.group(1),
            "action": "reprocess",
            "batch": BATCH,
            "item": "a",
            "model": "paraformer-v2",
            "options": "diarization_enabled=true\nspeaker_count=2",
        }
        done = client.post("/do", data=form, follow_redirects=False)
        assert done.status_code == 303 and "/items/b1/a?done=" in done.headers["location"]
        bad = client.post("/do", data={**form, "options": "not a pair"})
        assert bad.status_code == 400
    row = _row(ledger, "a")
    assert row.state is ItemState.PENDING and row.spec["model"] == "paraformer-v2"
    assert row.spec["options"] == {"diarization_enabled": True, "speaker_count": 2}
    action = ledger.actions_of(item_id=row.id)[0]
    assert action["action"] == "reprocess" and action["actor"].startswith("console:local@")


def test_csp_lets_the_player_read_a_plain_http_s3_endpoint() -> None:
    """The page's policy adds the S3 endpoint's origin to media-src only when it is plain
    http (https: is allowed already), and keeps its path and credentials out."""
    from pipeline.console.app import csp_for
    from pipeline.settings import Settings

    plain = csp_for(Settings(s3_endpoint_url="http://minio.internal:9000/some/path"))
    assert "media-src 'self' https: http://minio.internal:9000;" in plain
    assert "/some/path" not in plain
    assert "media-src 'self' https:;" in csp_for(Settings())
    assert "media-src 'self' https:;" in csp_for(Settings(s3_endpoint_url="https://s3.example"))
