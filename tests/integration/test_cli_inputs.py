"""End to end: `bulkscribe run INPUT...` with media files, folders and manifests, real model.

Ids and output paths depend only on each file's own path: a folder that grows between runs
never has its old outputs renamed, overwritten or transcribed again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e import read_results
from support import LIBRIVOX_DIR

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model, pytest.mark.usefixtures("one_worker")]

EXE = Path(sys.executable).with_name("bulkscribe")
CLIP = {
    n: LIBRIVOX_DIR / f"sense_and_sensibility_01_austen_64kb-{n}.wav"
    for n in ("0870", "0880", "0890", "0930")
}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=600,
    )


def transcribed(out: Path, since: int = 0) -> list[str]:
    """Items the local engine transcribed, from the run log (lines after ``since``)."""
    lines = (out / "bulkscribe.log").read_text().splitlines()[since:]
    return sorted(
        e["item_id"] for e in map(json.loads, lines) if e.get("event") == "transcribe.done"
    )


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
        and p.suffix in (".json", ".txt", ".srt", ".vtt")
        and ".bulkscribe" not in p.relative_to(out).parts  # the ledger's own copies
    }


def test_one_file_goes_to_default_transcripts(tmp_path: Path) -> None:
    """`bulkscribe run a.wav` in a fresh directory writes ./transcripts/a.* and exits 0."""
    shutil.copyfile(CLIP["0930"], tmp_path / "a.wav")
    proc = cli("run", "a.wav", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "transcripts"
    assert [(r["id"], r["status"]) for r in read_results(out)] == [("a", "SUCCEEDED")]
    assert sorted(p.name for p in out.glob("a.*")) == ["a.json", "a.srt", "a.txt", "a.vtt"]
    assert "amiable" in (out / "a.txt").read_text()


def test_several_files_in_one_run(tmp_path: Path) -> None:
    """Several media INPUTs (WAV and a MP3) are one batch, in the order given."""
    shutil.copyfile(CLIP["0930"], tmp_path / "b.wav")
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-i",
            str(CLIP["0890"]),
            "-c:a",
            "libmp3lame",
            str(tmp_path / "a.mp3"),
        ],
        check=True,
    )
    proc = cli("run", "b.wav", "a.mp3", "--out", "o", "--formats", "txt", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["processed"] == 2
    assert [(r["id"], r["status"]) for r in read_results(tmp_path / "o")] == [
        ("b", "SUCCEEDED"),
        ("a", "SUCCEEDED"),
    ]
    assert "selfish" in (tmp_path / "o" / "a.txt").read_text()


def test_a_growing_folder_keeps_its_outputs(tmp_path: Path) -> None:
    """The tree is mirrored under --out. Adding aaa/meeting.wav and a day2/meeting.mp3 (which
    sorts before the day2/meeting.wav that owns its id) transcribes only the new file; the old
    outputs keep their bytes and mtimes, and the clash is duplicate_id naming the owner."""
    tapes = tmp_path / "tapes"
    (tapes / "day1").mkdir(parents=True)
    (tapes / "day2").mkdir()
    shutil.copyfile(CLIP["0870"], tapes / "day1" / "meeting.wav")
    shutil.copyfile(CLIP["0880"], tapes / "day2" / "meeting.wav")
    out = tmp_path / "out"
    first = cli("run", "tapes", "--out", "out", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert transcribed(out) == ["day1/meeting", "day2/meeting"]
    before = snapshot(out)
    assert sorted(before) == sorted(
        f"day{d}/meeting.{f}" for d in (1, 2) for f in ("json", "txt", "srt", "vtt")
    )
    log_lines = len((out / "bulkscribe.log").read_text().splitlines())

    (tapes / "aaa").mkdir()
    shutil.copyfile(CLIP["0930"], tapes / "aaa" / "meeting.wav")
    shutil.copyfile(CLIP["0890"], tapes / "day2" / "meeting.mp3")
    second = cli("run", "tapes", "--out", "out", "--json", cwd=tmp_path)
    assert second.returncode == 1, second.stderr  # the clash fails
    assert json.loads(second.stdout)["processed"] == 1
    assert transcribed(out, log_lines) == ["aaa/meeting"]
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == [
        f"aaa/meeting.{f}" for f in ("json", "srt", "txt", "vtt")
    ]
    results: list[dict[str, Any]] = read_results(out)
    assert [(r["id"], r["status"]) for r in results] == [
        ("aaa/meeting", "SUCCEEDED"),
        ("day1/meeting", "SUCCEEDED"),
        ("day2/meeting", "FAILED"),
        ("day2/meeting", "SUCCEEDED"),
    ]
    clash = results[2]
    assert clash["source"] == str(tapes / "day2" / "meeting.mp3")
    assert clash["error"] == {
        "code": "duplicate_id",
        "message": (
            f"{tapes / 'day2' / 'meeting.mp3'}: id 'day2/meeting' is already used by "
            f"{tapes / 'day2' / 'meeting.wav'}"
        ),
    }
    assert results[3]["source"] == str(tapes / "day2" / "meeting.wav")


def test_typo_warns_and_engine_options_are_checked(tmp_path: Path) -> None:
    """A misspelt field is one warning with a did-you-mean on stderr and in the log, and the
    item still runs; vocabulary_id on the local engine fails with unsupported_option."""
    shutil.copyfile(CLIP["0930"], tmp_path / "a.wav")
    shutil.copyfile(CLIP["0890"], tmp_path / "b.wav")
    (tmp_path / "m.jsonl").write_text(
        '{"source": "a.wav", "langauge": "en", "context": "Sense and Sensibility"}\n'
        '{"source": "b.wav", "langauge": "en", "vocabulary_id": "vocab-1"}\n'
    )
    proc = cli("run", "m.jsonl", "--out", "o", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    warning = "unknown field 'langauge' on line 1 and 1 more line(s): did you mean 'language'?"
    assert proc.stderr.count("unknown field") == 1 and warning in proc.stderr
    assert warning in (tmp_path / "o" / "bulkscribe.log").read_text()
    a, b = read_results(tmp_path / "o")
    assert (a["id"], a["status"]) == ("a", "SUCCEEDED")
    assert (b["id"], b["status"], b["error"]["code"]) == ("b", "FAILED", "unsupported_option")
    assert b["error"]["message"] == (
        "line 2: option 'vocabulary_id' is not supported by the local engine (model tiny.en)"
    )
    assert transcribed(tmp_path / "o") == ["a"]  # refused before any work


def test_strict_refuses_unknown_fields(tmp_path: Path) -> None:
    """--strict makes a line with an unknown field manifest_invalid; the others still run."""
    shutil.copyfile(CLIP["0930"], tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text(
        '{"source": "a.wav", "langauge": "en"}\n'
        '{"source": "a.wav", "id": "ok", "hotwords": "Marianne"}\n'
    )
    proc = cli("run", "m.jsonl", "--strict", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    bad, ok = read_results(tmp_path / "o")
    assert (bad["status"], bad["error"]["code"]) == ("FAILED", "manifest_invalid")
    assert bad["error"]["message"] == "line 1: unknown field 'langauge': did you mean 'language'?"
    assert (ok["id"], ok["status"]) == ("ok", "SUCCEEDED")
    assert "unknown field" not in proc.stderr  # no warning: the line failed instead
