"""`bulkscribe run --engine dashscope` end to end against the emulator over real HTTP.

The emulator runs in this process (its transcripts come from the real tiny.en model); the
pipeline runs as the real CLI in a subprocess, reaching DashScope's API the way it would
reach the real service. Local files reach the provider through DashScope's temporary upload.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import HARVARD, ffmpeg, say, walk, wer

from pipeline.emulator import EmulatorConfig, running_emulator
from pipeline.ledger import open_ledger, sqlite_url
from pipeline.states import ItemState

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model, pytest.mark.slow]

ASYNC_MODELS = ("fun-asr", "qwen3-asr-flash-filetrans")
SYNC_MODELS = ("qwen3-asr-flash", "qwen3-omni-flash")


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """One emulator for the module; tests reset it and set its knobs."""
    with running_emulator(EmulatorConfig(latency_s=0.2, max_concurrency=8)) as url:
        yield url


@pytest.fixture
def emu(emulator: str) -> Iterator[str]:
    """The emulator, reset and with no faults."""
    httpx.post(f"{emulator}/_emulator/reset")
    httpx.post(
        f"{emulator}/_emulator/config",
        json={
            "latency_s": 0.2,
            "fail_rate": 0,
            "throttle_rate": 0,
            "error_rate": 0,
            "lost_rate": 0,
            "stuck_rate": 0,
            "submit_delay_s": 0,
        },
    )
    yield emulator


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """Three short espeak clips (two sentences each) with their reference texts."""
    d = tmp_path_factory.mktemp("ds-media")
    out = []
    for i in range(3):
        text = " ".join(HARVARD[2 * i : 2 * i + 2])
        wav = say(text, d / f"clip{i}.wav")
        out.append((wav, text))
    mp3 = d / "clip0.mp3"
    ffmpeg(["-i", str(out[0][0]), "-c:a", "libmp3lame", "-b:a", "64k", str(mp3)])
    return out


def _manifest(tmp: Path, clips: list[tuple[Path, str]]) -> Path:
    lines = [{"id": f"c{i}", "source": str(p)} for i, (p, _) in enumerate(clips)]
    lines.append({"id": "trimmed", "source": str(clips[0][0]), "start_s": 1.0})
    path = tmp / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _env(emu: str, **extra: str) -> dict[str, str]:
    return {
        "DASHSCOPE_API_KEY": "sk-test",
        "BULKSCRIBE_DASHSCOPE_BASE_URL": f"{emu}/api/v1",
        "BULKSCRIBE_POLL__FIRST_S": "0.2",
        "BULKSCRIBE_POLL__MAX_S": "0.5",
        "BULKSCRIBE_RETRY__BACKOFF_BASE_S": "0.1",
        "BULKSCRIBE_RETRY__BACKOFF_MAX_S": "0.5",
        **extra,
    }


def _results(out: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def _tasks_per_file(emu: str) -> collections.Counter[str]:
    """Provider tasks per file; uploads are named by the audio's SHA-256, whatever the key."""
    tasks = httpx.get(f"{emu}/_emulator/tasks").json()
    return collections.Counter(u.rsplit("/", 1)[-1] for t in tasks for u in t["file_urls"])


@pytest.mark.parametrize("model", ASYNC_MODELS + SYNC_MODELS)
def test_every_family_transcribes_the_manifest(
    model: str, emu: str, clips, tmp_path: Path, run_cli
) -> None:
    """Each DashScope model family turns the clips into text with times on the source timeline."""
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(_manifest(tmp_path, clips)),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        model,
        env=_env(emu),
    )
    assert proc.returncode == 0, proc.stderr
    results = _results(out)
    assert {r["status"] for r in results.values()} == {"SUCCEEDED"}
    # tiny.en on espeak-ng speech: the exact words vary with the CPU's math kernels (one
    # machine hears "the depth of a well" as "the napf of it well"), so the bound is on the
    # three clips together, with a looser one per clip that still catches a swapped file.
    hypotheses = [(out / f"c{i}.txt").read_text() for i in range(len(clips))]
    assert wer(" ".join(t for _, t in clips), " ".join(hypotheses)) < 0.35, hypotheses
    for (_, text), hypothesis in zip(clips, hypotheses, strict=True):
        assert wer(text, hypothesis) < 0.5, hypothesis
    doc = json.loads((out / "trimmed.json").read_text())
    sentences = doc["transcripts"][0]["sentences"]
    assert sentences and sentences[0]["begin_time"] >= 1000  # trimmed by start_s=1.0
    assert doc["properties"]["original_duration_in_milliseconds"] > sentences[-1]["begin_time"]
    if model in ASYNC_MODELS:
        per_file = _tasks_per_file(emu)
        # c0 and "trimmed" are different audio; every file went to the provider exactly once.
        assert len(per_file) == 4 and set(per_file.values()) == {1}
        if model == "fun-asr":
            assert all(s["words"] for s in sentences)


def test_throttling_and_server_errors_are_retried_without_duplicates(
    emu: str, clips, tmp_path: Path, run_cli
) -> None:
    """429s and 500s on half the requests still end with every item done, each file once.

    A submission here is two API requests (upload policy, then submit). 429s do not spend an
    item's tries; a 500 ends about 55 % of the submissions that do not end in a 429, so with
    20 tries an item runs out about once in 200,000.
    """
    httpx.post(f"{emu}/_emulator/config", json={"throttle_rate": 0.3, "error_rate": 0.2})
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(_manifest(tmp_path, clips)),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        "fun-asr",
        env=_env(emu, BULKSCRIBE_RETRY__MAX_ATTEMPTS="20"),
    )
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in _results(out).values()} == {"SUCCEEDED"}
    assert set(_tasks_per_file(emu).values()) == {1}


def test_lost_tasks_are_submitted_again(emu: str, clips, tmp_path: Path, run_cli) -> None:
    """Tasks that come back UNKNOWN are resubmitted and the items still succeed."""
    httpx.post(f"{emu}/_emulator/config", json={"lost_rate": 0.5})
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(_manifest(tmp_path, clips)),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        "qwen3-asr-flash-filetrans",
        env=_env(emu, BULKSCRIBE_RETRY__MAX_ATTEMPTS="10"),
    )
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in _results(out).values()} == {"SUCCEEDED"}
    tasks = httpx.get(f"{emu}/_emulator/tasks").json()
    assert any(t["fate"] == "lost" for t in tasks)  # the fault did happen
    assert len(tasks) > 4  # and lost tasks were replaced


def test_a_rerun_retries_items_whose_tasks_were_lost(
    emu: str, clips, tmp_path: Path, run_cli
) -> None:
    """Items whose retries ran out on lost tasks (task_lost, transient) end FAILED; a plain
    re-run of the same command gives them a new attempt, and they succeed."""
    httpx.post(f"{emu}/_emulator/config", json={"lost_rate": 1.0})
    out = tmp_path / "out"
    args = ("run", str(_manifest(tmp_path, clips)), "--out", str(out), "--engine", "dashscope")
    args += ("--model", "qwen3-asr-flash-filetrans")
    proc = run_cli(*args, env=_env(emu, BULKSCRIBE_RETRY__MAX_ATTEMPTS="1"))
    assert proc.returncode == 1
    assert {r["error"]["code"] for r in _results(out).values()} == {"task_lost"}
    httpx.post(f"{emu}/_emulator/config", json={"lost_rate": 0})
    proc = run_cli(*args, env=_env(emu, BULKSCRIBE_RETRY__MAX_ATTEMPTS="1"))
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in _results(out).values()} == {"SUCCEEDED"}


def test_failed_tasks_fail_their_items_without_retrying(
    emu: str, clips, tmp_path: Path, run_cli
) -> None:
    """A task the provider FAILED is final: items FAILED with provider_failed, one task each."""
    httpx.post(f"{emu}/_emulator/config", json={"fail_rate": 1.0})
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(_manifest(tmp_path, clips)),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        "fun-asr",
        env=_env(emu),
    )
    assert proc.returncode == 1
    results = _results(out)
    assert {r["error"]["code"] for r in results.values()} == {"provider_failed"}
    assert set(_tasks_per_file(emu).values()) == {1}
    # Permanent as recorded: a plain re-run leaves them FAILED and submits nothing.
    httpx.post(f"{emu}/_emulator/config", json={"fail_rate": 0})
    again = run_cli(
        "run",
        str(_manifest(tmp_path, clips)),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        "fun-asr",
        env=_env(emu),
    )
    assert again.returncode == 1
    assert {r["error"]["code"] for r in _results(out).values()} == {"provider_failed"}
    assert set(_tasks_per_file(emu).values()) == {1}


def test_wrong_key_fails_items_with_provider_auth(tmp_path: Path, clips, run_cli) -> None:
    """An emulator that checks keys refuses a wrong one; the items say provider_auth."""
    with running_emulator(EmulatorConfig(api_key="sk-right", latency_s=0.1)) as url:
        out = tmp_path / "out"
        proc = run_cli(
            "run",
            str(_manifest(tmp_path, clips)),
            "--out",
            str(out),
            "--engine",
            "dashscope",
            "--model",
            "qwen3-asr-flash-filetrans",
            env=_env(url, DASHSCOPE_API_KEY="sk-wrong"),
        )
    assert proc.returncode == 1
    assert {r["error"]["code"] for r in _results(out).values()} == {"provider_auth"}


def test_missing_key_is_a_usage_error(tmp_path: Path, clips, run_cli) -> None:
    """Without DASHSCOPE_API_KEY the dashscope engine stops before touching any item."""
    env = {k: v for k, v in os.environ.items() if k != "DASHSCOPE_API_KEY"}
    exe = Path(sys.executable).with_name("bulkscribe")
    proc = subprocess.run(
        [
            str(exe),
            "run",
            str(_manifest(tmp_path, clips)),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "dashscope",
            "--model",
            "fun-asr",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "DASHSCOPE_API_KEY" in proc.stderr


def test_rerun_after_kill_never_resubmits_a_live_task(emu: str, clips, tmp_path: Path) -> None:
    """kill -9 while tasks run; the re-run polls the same tasks instead of submitting again."""
    httpx.post(f"{emu}/_emulator/config", json={"latency_s": 6.0})
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, clips)
    exe = str(Path(sys.executable).with_name("bulkscribe"))
    env = {**os.environ, **_env(emu)}
    proc = subprocess.Popen(
        [
            exe,
            "run",
            str(manifest),
            "--out",
            str(out),
            "--engine",
            "dashscope",
            "--model",
            "qwen3-asr-flash-filetrans",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger = out / ".bulkscribe" / "ledger.db"
    try:
        submitted = _wait_until_submitted(ledger, 4)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert submitted == 4, "the run never had all four tasks in flight"
    before = len(httpx.get(f"{emu}/_emulator/tasks").json())
    httpx.post(f"{emu}/_emulator/config", json={"latency_s": 0.2})
    again = subprocess.run(
        [
            exe,
            "run",
            str(manifest),
            "--out",
            str(out),
            "--engine",
            "dashscope",
            "--model",
            "qwen3-asr-flash-filetrans",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert len(httpx.get(f"{emu}/_emulator/tasks").json()) == before == 4
    assert {r["status"] for r in _results(out).values()} == {"SUCCEEDED"}


def test_force_after_a_kill_starts_new_attempts_for_claimed_items(
    emu: str, clips, tmp_path: Path, run_cli
) -> None:
    """Items a killed run left claimed (one being prepared, one being submitted) get their
    claims released before --force resets the manifest, so they start a new attempt like
    every other item (a new attempt never starts from a claimed state) and succeed."""
    out = tmp_path / "out"
    args = ("run", str(_manifest(tmp_path, clips)), "--out", str(out), "--engine", "dashscope")
    args += ("--model", "qwen3-asr-flash-filetrans")
    assert run_cli(*args, env=_env(emu)).returncode == 0
    ledger = open_ledger(sqlite_url(out / ".bulkscribe" / "ledger.db"))
    rows = {r.key: r for r in ledger.list_items()}
    for key, state in (("c0", ItemState.PREPARING), ("c1", ItemState.SUBMITTING)):
        assert ledger.restart(rows[key].id)  # attempt 2, then claimed as a killed run left it
        assert walk(ledger, rows[key].id, state)
    ledger.engine.dispose()
    proc = run_cli(*args, "--force", env=_env(emu))
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(out / ".bulkscribe" / "ledger.db") as db:
        got = dict(db.execute("select key, attempt from items").fetchall())
    assert got == {"c0": 3, "c1": 3, "c2": 2, "trimmed": 2}
    assert {r["status"] for r in _results(out).values()} == {"SUCCEEDED"}


def _wait_until_submitted(ledger: Path, n: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    submitted = 0
    while time.monotonic() < deadline and submitted < n:
        time.sleep(0.2)
        if not ledger.exists():
            continue
        try:
            with sqlite3.connect(ledger) as db:
                submitted = db.execute(
                    "select count(*) from items where state='SUBMITTED'"
                ).fetchone()[0]
        except sqlite3.OperationalError:  # the run is still creating its tables
            continue
    return submitted


def test_long_audio_is_split_for_the_sync_model(emu: str, tmp_path: Path, run_cli) -> None:
    """A 4-minute file goes to qwen3-asr-flash in clips of at most 3 minutes, times stitched."""
    text = " ".join(HARVARD)
    one = say(text, tmp_path / "one.wav")
    long = tmp_path / "long.wav"
    ffmpeg(["-stream_loop", "-1", "-i", str(one), "-t", "240", str(long)])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "long", "source": str(long)}) + "\n")
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(manifest),
        "--out",
        str(out),
        "--engine",
        "dashscope",
        "--model",
        "qwen3-asr-flash",
        env=_env(emu),
    )
    assert proc.returncode == 0, proc.stderr
    sentences = json.loads((out / "long.json").read_text())["transcripts"][0]["sentences"]
    begins = [s["begin_time"] for s in sentences]
    assert begins == sorted(begins)
    assert sentences[-1]["end_time"] > 200_000  # the last clip reached the end of the file
    assert httpx.get(f"{emu}/_emulator/stats").json()["requests"] >= 2
