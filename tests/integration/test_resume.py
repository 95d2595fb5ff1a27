"""Crash safety: kill -9 in the middle of a run, then run again; and one run per --out.

The run is the real CLI in a subprocess with one worker, killed once the ledger shows two
items finished, so the kill lands while a later item is being prepared or transcribed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e import (
    BULKSCRIBE,
    ledger_rows,
    log_events,
    media_processes,
    read_results,
    write_jsonl,
)
from support import wait_until

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]

N_ITEMS = 8


def manifest_of(root: Path, media) -> Path:  # type: ignore[no-untyped-def]
    # A copy under root, so every ffprobe/ffmpeg command line names root (see survivors).
    source = root / "speech.wav"
    shutil.copyfile(media["harvard_wav"], source)
    return write_jsonl(
        root / "m.jsonl", [{"id": f"h{i}", "source": str(source)} for i in range(1, N_ITEMS + 1)]
    )


def count_state(out: Path, state: str) -> int:
    try:
        return ledger_rows(out, f"SELECT count(*) FROM items WHERE state = '{state}'")[0][0]
    except sqlite3.Error:  # not created yet, or mid-migration
        return 0


@dataclass
class Killed:
    out: Path
    scratch: Path
    killed_pid: int
    states_at_kill: dict[str, str]
    mtimes_at_kill: dict[str, int]
    survivors: list[tuple[int, str]]
    rerun: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def killed(media, bulkscribe, tmp_path_factory: pytest.TempPathFactory) -> Killed:  # type: ignore[no-untyped-def]
    """A run killed with SIGKILL after two items succeeded, then the same command again."""
    root = tmp_path_factory.mktemp("resume")
    manifest, out, scratch = manifest_of(root, media), root / "out", root / "scratch"
    scratch.mkdir()
    env = {**os.environ, "BULKSCRIBE_SCRATCH_DIR": str(scratch)}
    args = ["run", str(manifest), "--out", str(out), "--workers", "1", "--json"]
    proc = subprocess.Popen(
        [str(BULKSCRIBE), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: count_state(out, "SUCCEEDED") >= 2 or proc.poll() is not None,
            120,
            "two items to succeed",
            every_s=0.05,
        )
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # ffmpeg/ffprobe children get SIGKILL with their parent; give the kernel a moment.
    deadline = time.monotonic() + 3
    while (survivors := media_processes(str(root))) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _ in survivors:  # do not leave them running even when the test fails
        os.kill(pid, signal.SIGKILL)
    states = dict(ledger_rows(out, "SELECT key, state FROM items"))
    mtimes = {
        key: (out / f"{key}.json").stat().st_mtime_ns
        for key, state in states.items()
        if state == "SUCCEEDED"
    }
    rerun = bulkscribe(*args, env={"BULKSCRIBE_SCRATCH_DIR": str(scratch)})
    return Killed(out, scratch, proc.pid, states, mtimes, survivors, rerun)


def test_kill_landed_mid_run(killed: Killed) -> None:
    """At the kill, at least two items were finished and at least one was not."""
    counts = Counter(killed.states_at_kill.values())
    assert counts["SUCCEEDED"] >= 2
    assert counts["SUCCEEDED"] < N_ITEMS


def test_no_ffmpeg_outlives_the_killed_run(killed: Killed) -> None:
    """No ffmpeg or ffprobe started by the killed run is still alive (PR_SET_PDEATHSIG)."""
    assert killed.survivors == []


def test_rerun_finishes_every_item(killed: Killed) -> None:
    """The same command again exits 0 and every item is SUCCEEDED with its outputs."""
    assert killed.rerun.returncode == 0, killed.rerun.stderr
    results = read_results(killed.out)
    assert [(r["id"], r["status"]) for r in results] == [
        (f"h{i}", "SUCCEEDED") for i in range(1, N_ITEMS + 1)
    ]
    assert all((killed.out / f"h{i}.srt").is_file() for i in range(1, N_ITEMS + 1))


def test_finished_items_are_not_redone(killed: Killed) -> None:
    """Items finished before the kill keep attempt 1, one attempt row and untouched outputs."""
    done = set(killed.mtimes_at_kill)
    rows: dict[str, Any] = {
        k: a for k, a in ledger_rows(killed.out, "SELECT key, attempt FROM items")
    }
    assert {k: rows[k] for k in done} == dict.fromkeys(done, 1)
    n_attempts = dict(
        ledger_rows(
            killed.out,
            "SELECT i.key, count(*) FROM attempts a "
            "JOIN items i ON i.id = a.item_id GROUP BY i.key",
        )
    )
    assert {k: n_attempts[k] for k in done} == dict.fromkeys(done, 1)
    assert {k: (killed.out / f"{k}.json").stat().st_mtime_ns for k in done} == killed.mtimes_at_kill


def test_nothing_is_transcribed_twice(killed: Killed) -> None:
    """Across both runs no item is transcribed twice, and every unfinished one is, once."""
    done = Counter(e["item_id"] for e in log_events(killed.out) if e["event"] == "transcribe.done")
    assert max(done.values()) == 1, done
    unfinished = {k for k, s in killed.states_at_kill.items() if s != "SUCCEEDED"}
    assert {k: done[k] for k in unfinished} == dict.fromkeys(unfinished, 1)


def test_no_normalized_audio_is_left_in_out(killed: Killed) -> None:
    """Once everything succeeded, the media store under --out holds no audio files."""
    media = killed.out / ".bulkscribe" / "media"
    assert [p for p in media.rglob("*") if p.is_file()] == []


def test_scratch_of_the_killed_run_is_removed(killed: Killed) -> None:
    """After the re-run, nothing the killed run put in the scratch directory remains."""
    assert killed.rerun.returncode == 0
    assert list(killed.scratch.iterdir()) == []


def test_second_run_on_the_same_out_is_refused(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """While a run holds --out, another `bulkscribe run` on it exits 2 naming the holder."""
    manifest, out = manifest_of(tmp_path, media), tmp_path / "out"
    args = [str(BULKSCRIBE), "run", str(manifest), "--out", str(out), "--workers", "1"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: (
                count_state(out, "PENDING") + count_state(out, "SUCCEEDED") > 0
                or first.poll() is not None
            ),
            120,
            "the first run to start",
            every_s=0.05,
        )
        assert first.poll() is None, "the first run ended too soon"
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2
        assert f"{out} is in use by another bulkscribe run (pid {first.pid})" in second.stderr
    finally:
        first.kill()
        first.wait()
