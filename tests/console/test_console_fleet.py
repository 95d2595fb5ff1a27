"""The console over the fleet's ledger (PostgreSQL, no --out): Schedules with next and last
run and the batch a schedule made; Fleet with queue depths from Redis, and a plain message
(not a hang) when the broker cannot be reached."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import shot, start_console
from support import scratch_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONFIG = """
[[distributed.schedules]]
name = "nightly"
cron = "0 2 * * *"
source = "file:///srv/incoming/"
out = "/srv/transcripts/nightly"
"""


def test_schedules_and_fleet(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    from pipeline.ledger import ItemSeed, open_ledger

    config = tmp_path / "bulkscribe.toml"
    config.write_text(CONFIG)
    with scratch_database("bulkscribe_console_test") as url:
        ledger = open_ledger(url)
        for batch, kind in (("sched-nightly-20261205-0200", "schedule"), ("manual-1", "submit")):
            ledger.ensure_batch(batch, kind=kind, out="/srv/out", engine="local", model="tiny.en")
            ledger.sync_items(
                batch,
                [ItemSeed("a", 1, "/srv/a.wav", {"source": "/srv/a.wav"}, "f")],
                engine="local",
                model="tiny.en",
            )
        ledger.engine.dispose()
        env = {"BULKSCRIBE_DATABASE_URL": url, "BULKSCRIBE_BROKER_URL": "redis://127.0.0.1:6379/15"}
        proc, base = start_console("--config", str(config), env=env)
        try:
            schedules = httpx.get(f"{base}/schedules").text
            assert "nightly" in schedules and "0 2 * * *" in schedules
            assert "T02:00" in schedules  # the next run, in UTC
            assert "/batches/sched-nightly-20261205-0200" in schedules  # the batch it made
            page.goto(f"{base}/schedules")
            shot(page, "schedules")
            listed = httpx.get(f"{base}/api/batches", params={"schedule": "nightly"}).json()
            assert [b["batch_id"] for b in listed["batches"]] == ["sched-nightly-20261205-0200"]
            # Actions on PostgreSQL (the item's move and its attempt's end in one statement)
            cancelled = httpx.post(f"{base}/api/batches/manual-1/cancel", json={}).json()
            assert cancelled["cancelled"] == 1
            item = httpx.get(f"{base}/api/items/manual-1/a").json()
            assert item["state"] == "CANCELLED" and item["attempts"][-1]["state"] == "CANCELLED"
            assert [a["action"] for a in item["actions"]] == ["cancel"]
            redo = httpx.post(f"{base}/api/items/manual-1/a/reprocess", json={"model": "base"})
            assert redo.json()["reprocessed"] == 1
            started = time.monotonic()
            fleet = httpx.get(f"{base}/fleet", timeout=20).text
            assert "Queues" in fleet and "prepare" in fleet and "in flight" in fleet
            assert time.monotonic() - started < 10
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        env["BULKSCRIBE_BROKER_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
        proc, base = start_console(env=env)
        try:
            started = time.monotonic()
            fleet = httpx.get(f"{base}/fleet", timeout=20).text
            assert "is not reachable" in fleet and time.monotonic() - started < 10
            api = httpx.get(f"{base}/api/fleet", timeout=20).json()
            assert api["reachable"] is False and api["workers"] == []
            assert api["provider_inflight"] == 0
            page.goto(f"{base}/fleet")
            shot(page, "fleet-unreachable")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
