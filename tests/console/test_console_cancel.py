"""Cancel end to end: an embedded DashScope run against the emulator is cancelled while its
provider tasks are queued and running; the queued one is cancelled through the cancel API,
the running one is left to finish unfetched, the run ends, and results say CANCELLED."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import EXE, _env, free_port

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model, pytest.mark.slow]


def _states(db: Path) -> dict[str, tuple[str, str | None]]:
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT key, state, provider_task_id FROM items").fetchall()
    except sqlite3.OperationalError:  # the run is still creating its ledger
        return {}
    return {k: (s, t) for k, s, t in rows}


def test_cancel_running_dashscope_run(finished_run: Path, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    # One task RUNNING at a time, for a minute: the second stays PENDING (cancellable).
    emulator = subprocess.Popen(
        [
            str(EXE),
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--latency-s",
            "60",
            "--max-concurrency",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    env = _env(
        DASHSCOPE_API_KEY="sk-test-cancel",
        BULKSCRIBE_DASHSCOPE_BASE_URL=base,
        BULKSCRIBE_PROVIDER__BATCH_SIZE="1",
    )
    out = tmp_path / "out"
    run = None
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        run = subprocess.Popen(
            [
                str(EXE),
                "run",
                str(finished_run.parent / "in"),
                "--out",
                str(out),
                "--engine",
                "dashscope",
                "--model",
                "fun-asr",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        db = out / ".bulkscribe" / "ledger.db"
        deadline = time.monotonic() + 90
        states: dict[str, tuple[str, str | None]] = {}
        while time.monotonic() < deadline:
            states = _states(db) if db.exists() else {}
            if sum(1 for s, _ in states.values() if s == "SUBMITTED") == 2:
                break
            time.sleep(0.2)
        assert sum(1 for s, _ in states.values() if s == "SUBMITTED") == 2, states
        time.sleep(1.5)  # the emulator starts the first task; the second waits PENDING
        done = subprocess.run(
            [str(EXE), "cancel", "--out", str(out), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["cancelled"] == 2
        assert len(report["tasks_cancelled"]) == 1 and len(report["tasks_running"]) == 1
        queued = report["tasks_cancelled"][0]
        task = httpx.get(
            f"{base}/tasks/{queued}", headers={"authorization": "Bearer sk-test-cancel"}
        ).json()
        assert task["output"]["task_status"] == "CANCELED"
        # The run sees its items finished and ends without waiting for the running task.
        stdout, _ = run.communicate(timeout=45)
        assert run.returncode == 1
        assert json.loads(stdout)["counts"] == {"CANCELLED": 2, "FAILED": 1}
        lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert sorted(x["status"] for x in lines) == ["CANCELLED", "CANCELLED", "FAILED"]
        assert {s for s, _ in _states(db).values()} == {"CANCELLED", "FAILED"}
    finally:
        for proc in (run, emulator):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
