"""Notifications from the real ``bulkscribe run`` on generated speech: one signed
batch.completed per completion, delivery surviving kill -9, operators' list and replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from notify_support import BULKSCRIBE, Receiver, cli, hang, payload, status
from support import say

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two short spoken files."""
    d = tmp_path_factory.mktemp("clips")
    return [
        say("The birch canoe slid on the smooth planks.", d / "one.wav"),
        say("Glue the sheet to the dark blue background.", d / "two.wav"),
    ]


def listed(out: Path) -> dict[str, object]:
    done = cli("notify", "list", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_run_sends_one_signed_batch_completed(
    clips: list[Path], tmp_path: Path, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """Two files transcribed; the endpoint answers 503, 503, then 200: three tries of one
    batch.completed (one webhook-id, each verified), with the counts, the audio seconds
    and where results.jsonl is. A re-run with nothing to do sends nothing more."""
    url = receiver.answer("/hook", status(503), status(503), status(200))
    out = tmp_path / "out"
    fast = {"BULKSCRIBE_NOTIFY__RETRY_SCHEDULE_S": "[0, 0.2, 0.2]"}
    done = cli("run", *map(str, clips), "--out", str(out), "--notify", url, env=fast)
    assert done.returncode == 0, done.stderr
    assert receiver.answered("/hook") == [503, 503, 200]
    got = receiver.at("/hook")
    assert len({d.id for d in got}) == 1 and all(d.ok for d in got)
    doc = payload(got[-1])
    assert doc["type"] == "batch.completed"
    data = doc["data"]
    assert data["counts"] == {"SUCCEEDED": 2} and data["total"] == 2
    assert data["results"] == str(out / "results.jsonl") and (out / "results.jsonl").is_file()
    assert 4 < data["audio_s"] < 10 and data["kind"] == "run"
    # The local engine has no provider to pay: 0 with no price in [prices] (as in `plan`).
    assert (data["cost"], data["currency"]) == (0.0, None)
    (msg,) = listed(out)["messages"]  # type: ignore[misc]
    assert (msg["id"], msg["state"], msg["tries"]) == (got[0].id, "DELIVERED", 3)
    again = cli("run", *map(str, clips), "--out", str(out), "--notify", url, env=fast)
    assert again.returncode == 0, again.stderr
    assert len(receiver.at("/hook")) == 3


def test_killed_after_the_event_is_written_delivers_on_the_next_run(
    clips: list[Path], tmp_path: Path, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """kill -9 while the endpoint holds the first try: the event is in the ledger, so the
    next run (which has nothing left to transcribe) sends it, with the same webhook-id,
    once its claim runs out."""
    url = receiver.answer("/slow", hang(20), status(200))
    out = tmp_path / "out"
    env = {**os.environ, "BULKSCRIBE_NOTIFY__TIMEOUT_S": "2"}
    proc = subprocess.Popen(
        [str(BULKSCRIBE), "run", *map(str, clips), "--out", str(out), "--notify", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        receiver.wait("/slow", 1, timeout_s=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (waiting,) = listed(out)["messages"]  # type: ignore[misc]
    assert (waiting["state"], waiting["tries"]) == ("PENDING", 1)
    started = time.monotonic()
    done = cli(
        "run", *map(str, clips), "--out", str(out), env={"BULKSCRIBE_NOTIFY__TIMEOUT_S": "2"}
    )
    assert done.returncode == 0, done.stderr
    first, second = receiver.at("/slow")
    assert first.id == second.id == waiting["id"] and first.ok and second.ok
    assert receiver.answered("/slow", timeout_s=0.5)[1] == 200
    assert time.monotonic() - started < 30
    (msg,) = listed(out)["messages"]  # type: ignore[misc]
    assert (msg["state"], msg["tries"]) == ("DELIVERED", 2)


def test_refused_endpoint_then_replay(
    clips: list[Path], tmp_path: Path, receiver: Receiver, notify_env: dict[str, str]
) -> None:
    """Without notify.allow_private a loopback endpoint is refused (the run still succeeds);
    `notify list` says why, and `notify replay --failed` with the setting delivers it."""
    url = receiver.answer("/hook", status(200))
    out = tmp_path / "out"
    strict = {"BULKSCRIBE_NOTIFY__ALLOW_PRIVATE": "false"}
    done = cli("run", str(clips[0]), "--out", str(out), "--notify", url, env=strict)
    assert done.returncode == 0, done.stderr
    assert receiver.at("/hook") == []
    (msg,) = listed(out)["messages"]  # type: ignore[misc]
    assert msg["state"] == "FAILED" and "notify.allow_private is false" in msg["last_error"]
    text = cli("notify", "list", "--out", str(out))
    assert msg["id"] in text.stdout and "FAILED" in text.stdout
    replay = cli("notify", "replay", "--failed", "--out", str(out), "--json")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) == {"replayed": [msg["id"]], "tries": {"DELIVERED": 1}}
    (got,) = receiver.at("/hook")
    assert got.ok and got.id == msg["id"]


def test_notify_needs_a_secret(
    clips: list[Path], tmp_path: Path, notify_env: dict[str, str]
) -> None:
    """--notify without BULKSCRIBE_NOTIFY_SECRET is a usage error before anything runs."""
    env = {k: v for k, v in os.environ.items() if k != "BULKSCRIBE_NOTIFY_SECRET"}
    done = subprocess.run(
        [
            str(BULKSCRIBE),
            "run",
            str(clips[0]),
            "--out",
            str(tmp_path / "out"),
            "--notify",
            "http://127.0.0.1:9/h",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "BULKSCRIBE_NOTIFY_SECRET" in done.stderr
    assert not (tmp_path / "out").exists()
    bad = cli("run", str(clips[0]), "--out", str(tmp_path / "out"), "--notify", "ftp://x/y")
    assert bad.returncode == 2 and "http://" in bad.stderr


def test_replay_of_an_unknown_id_is_a_usage_error(
    tmp_path: Path, notify_env: dict[str, str]
) -> None:
    """`notify replay` names the ids it does not know; --out must hold a run."""
    from pipeline.ledger import open_ledger, sqlite_url

    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    open_ledger(sqlite_url(out / ".bulkscribe" / "ledger.db"))
    done = cli("notify", "replay", "msg_nope", "--out", str(out))
    assert done.returncode == 2 and "no message msg_nope" in done.stderr
    empty = cli("notify", "list", "--out", str(tmp_path))
    assert empty.returncode == 2 and "holds no bulkscribe run" in empty.stderr
