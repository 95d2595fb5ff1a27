"""The console's JSON API over a real embedded run: every route, filter and action, tokens."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable

import pytest
from conftest import EXE, READONLY, TOKEN, Served, _env, start_console

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]


def _batch(client) -> str:  # type: ignore[no-untyped-def]
    batches = client.get("/api/batches").json()["batches"]
    assert len(batches) == 1
    return str(batches[0]["batch_id"])


def test_reads(serve: Callable[..., Served], finished_run) -> None:  # type: ignore[no-untyped-def]
    """Batch list, status (the `status --json` object), item pages with every filter and
    the cursor, an item with a nested id, healthz without auth."""
    s = serve()
    c = s.client(TOKEN)
    assert c.get("/healthz", headers={"authorization": ""}).json() == {"ok": True}
    listed = c.get("/api/batches").json()["batches"][0]
    assert listed["counts"] == {"SUCCEEDED": 2, "FAILED": 1}
    assert listed["total"] == 3 and listed["finished"] == 3 and listed["percent"] == 100.0
    assert listed["eta_s"] is None and listed["audio_done_h"] > 0
    batch = listed["batch_id"]
    assert c.get("/api/batches", params={"state": "DEAD"}).json()["batches"] == []
    assert (
        len(c.get("/api/batches", params={"date": listed["created_at"][:10]}).json()["batches"])
        == 1
    )
    assert c.get("/api/batches", params={"schedule": "nightly"}).json()["batches"] == []

    status = c.get(f"/api/batches/{batch}").json()
    # (the copy's batch id is the original directory's, so ask about that one)
    cli = subprocess.run(
        [str(EXE), "status", "--out", str(finished_run), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    import json

    assert set(status) == set(json.loads(cli.stdout))
    assert status["counts"] == {"SUCCEEDED": 2, "FAILED": 1}

    page = c.get(f"/api/batches/{batch}/items", params={"limit": 2}).json()
    assert [i["line"] for i in page["items"]] == [1, 2] and page["next"]
    rest = c.get(f"/api/batches/{batch}/items", params={"limit": 2, "after": page["next"]}).json()
    assert [i["line"] for i in rest["items"]] == [3] and rest["next"] is None
    every = page["items"] + rest["items"]
    assert {"id", "state", "error", "source"} <= set(every[0])
    failed = c.get(f"/api/batches/{batch}/items", params={"state": "FAILED"}).json()["items"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "not_media"
    assert "<img src=x onerror=alert(1)>.wav" in failed[0]["source"]
    by_code = c.get(f"/api/batches/{batch}/items", params={"code": "not_media"}).json()
    assert [i["id"] for i in by_code["items"]] == [failed[0]["id"]]
    by_q = c.get(f"/api/batches/{batch}/items", params={"q": "meet"}).json()["items"]
    assert [i["id"] for i in by_q] == ["day2/meeting"]
    assert c.get(f"/api/batches/{batch}/items", params={"q": "%"}).json()["items"] == []
    assert c.get(f"/api/batches/{batch}/items", params={"after": "garbage!"}).status_code == 400
    assert c.get("/api/batches/nope/items").status_code == 404

    item = c.get(f"/api/items/{batch}/day2/meeting").json()
    assert item["id"] == "day2/meeting" and item["state"] == "SUCCEEDED"
    assert item["attempts"][0]["state"] == "SUCCEEDED" and item["outputs"]["json"]
    assert "media_url" not in item
    assert c.get(f"/api/items/{batch}/day2/nothing").status_code == 404
    assert c.get("/api/fleet").status_code == 404  # an embedded run has no fleet


def test_auth(serve: Callable[..., Served]) -> None:
    """No token: 401 with WWW-Authenticate; a wrong one too; read-only: reads yes, POSTs 403."""
    s = serve()
    anon = s.client()
    r = anon.get("/api/batches")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert s.client("wrong").get("/api/batches").status_code == 401
    viewer = s.client(READONLY)
    batch = _batch(viewer)
    assert viewer.post(f"/api/batches/{batch}/retry").status_code == 403
    assert anon.post(f"/api/batches/{batch}/retry").status_code == 401
    r = anon.get("/")
    assert r.status_code == 401 and 'name="token"' in r.text  # the login page
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


def _state(s: Served, key: str) -> tuple[str, int]:
    with sqlite3.connect(s.ledger_path) as db:
        row = db.execute("SELECT state, attempt FROM items WHERE key = ?", (key,)).fetchone()
    return str(row[0]), int(row[1])


def test_actions(serve: Callable[..., Served]) -> None:
    """retry, reprocess (another model), replay and purge of a DEAD item, cancel: each
    changes the ledger as the CLI would and leaves an audit row in the item's timeline."""
    s = serve()
    c = s.client(TOKEN)
    batch = _batch(c)
    failed_key = c.get(f"/api/batches/{batch}/items", params={"state": "FAILED"}).json()["items"][
        0
    ]["key"]
    r = c.post(f"/api/batches/{batch}/retry")
    assert r.json() == {"batch_id": batch, "retried": 1}
    assert _state(s, failed_key) == ("PENDING", 2)
    detail = c.get(f"/api/items/{batch}/{failed_key}").json()
    assert [a["action"] for a in detail["actions"]] == ["retry"]
    assert detail["actions"][0]["actor"].startswith("console:operator@")

    r = c.post(f"/api/batches/{batch}/reprocess", json={"model": "base", "options": {"x": 1}})
    assert r.json()["reprocessed"] == 2  # the two SUCCEEDED ones; PENDING is left alone
    hello = c.get(f"/api/items/{batch}/hello").json()
    assert hello["spec"]["model"] == "base" and hello["spec"]["options"] == {"x": 1}
    assert hello["state"] == "PENDING" and hello["attempts"][-1]["model"] == "base"

    with sqlite3.connect(s.ledger_path) as db:
        db.execute(
            "UPDATE items SET state = 'DEAD', error_code = 'provider_timeout', "
            "error_message = 'gave up' WHERE key = 'hello'"
        )
    assert c.post(f"/api/items/{batch}/hello/replay").json()["replayed"] == 1
    assert _state(s, "hello")[0] == "PENDING"
    with sqlite3.connect(s.ledger_path) as db:
        db.execute("UPDATE items SET state = 'DEAD' WHERE key = 'hello'")
    assert c.post(f"/api/items/{batch}/hello/purge").json()["purged"] == 1
    assert _state(s, "hello")[0] == "FAILED"
    assert c.post(f"/api/items/{batch}/hello/cancel").status_code in (404, 405)

    r = c.post(f"/api/batches/{batch}/cancel").json()
    assert r["cancelled"] == 2 and r["tasks_cancelled"] == []  # the two PENDING items
    assert _state(s, "day2/meeting")[0] == "CANCELLED"
    assert _state(s, failed_key)[0] == "CANCELLED"
    timeline = [a["action"] for a in c.get(f"/api/items/{batch}/day2/meeting").json()["actions"]]
    assert timeline == ["cancel", "reprocess"]
    assert c.post(f"/api/batches/{batch}/reprocess", json={"engine": "cloud"}).status_code == 400
    assert c.post(f"/api/batches/{batch}/reprocess", content=b"[1]").status_code == 400
    assert c.post("/api/batches/nope/retry").status_code == 404


def test_run_after_cancel_keeps_cancelled(serve: Callable[..., Served], finished_run) -> None:  # type: ignore[no-untyped-def]
    """An embedded directory's next `bulkscribe run` leaves CANCELLED items alone, and
    results.jsonl says CANCELLED with the code `cancelled`."""
    s = serve()
    c = s.client(TOKEN)
    batch = _batch(c)
    assert c.post(f"/api/batches/{batch}/reprocess", json={}).json()["reprocessed"] == 3
    assert c.post(f"/api/batches/{batch}/cancel").json()["cancelled"] == 3
    src = finished_run.parent / "in"
    done = subprocess.run(
        [str(EXE), "run", str(src), "--out", str(s.out), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    import json

    summary = json.loads(done.stdout)
    assert summary["processed"] == 0
    lines = [json.loads(x) for x in (s.out / "results.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["CANCELLED"] * 3
    assert {x["error"]["code"] for x in lines if x["status"] == "CANCELLED"} == {"cancelled"}


def test_cancel_command(serve: Callable[..., Served]) -> None:
    """`bulkscribe cancel --out DIR --json` is the same operation from the command line."""
    s = serve()
    c = s.client(TOKEN)
    batch = _batch(c)
    c.post(f"/api/batches/{batch}/retry")
    done = subprocess.run(
        [str(EXE), "cancel", "--out", str(s.out), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(done.stdout)["cancelled"] == 1
    actions = c.get(f"/api/items/{batch}/{_failed_key(c, batch)}").json()["actions"]
    assert actions[0]["action"] == "cancel" and actions[0]["actor"].startswith("cli:")


def _failed_key(c, batch: str) -> str:  # type: ignore[no-untyped-def]
    return str(
        c.get(f"/api/batches/{batch}/items", params={"state": "CANCELLED"}).json()["items"][0][
            "key"
        ]
    )


def test_tokenless(finished_run) -> None:  # type: ignore[no-untyped-def]
    """No token: served on loopback with no login, writes must be JSON (a cross-site form
    cannot send that); on another address the console refuses to start (exit 2)."""
    proc, url = start_console("--out", str(finished_run))
    try:
        import httpx

        batch = httpx.get(f"{url}/api/batches").json()["batches"][0]["batch_id"]
        form = httpx.post(f"{url}/api/batches/{batch}/replay", data={"a": "b"})
        assert form.status_code == 415
        assert httpx.post(f"{url}/api/batches/{batch}/replay", json={}).json()["replayed"] == 0
        assert httpx.get(f"{url}/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    refused = subprocess.run(
        [str(EXE), "console", "--out", str(finished_run), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert refused.returncode == 2 and "without a token" in refused.stderr
