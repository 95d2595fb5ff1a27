"""The issue's "done when": a 20-item manifest, re-runs that do nothing, --force, new formats.

The batch mixes real speech in seven containers (trimmed, one channel of a stereo file, a
file:// URL) with ten bad inputs, and is run once for the module; each test then looks at
that run or re-runs it and compares.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e import (
    WORKERS,
    assert_times_sane,
    by_id,
    document_text,
    ledger_rows,
    log_events,
    read_results,
    write_jsonl,
)
from support import parse_srt, parse_vtt

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model, pytest.mark.usefixtures("one_worker")]

TRIM = (2.0, 7.5)
# id -> manifest fields beyond "id"; media keys in angle brackets are replaced by paths.
GOOD: dict[str, dict[str, Any]] = {
    "harvard-wav": {"source": "<harvard_wav>"},
    "harvard-mp3": {"source": "<harvard_mp3>"},
    "harvard-trim": {"source": "<harvard_wav>", "start_s": TRIM[0], "end_s": TRIM[1]},
    "stereo-right": {"source": "<stereo>", "channel": 1},
    "stereo-left": {"source": "<stereo>", "channel": 0},
    "lv-m4a": {"source": "<lv_m4a>"},
    "lv-flac": {"source": "<lv_flac>"},
    "lv-opus": {"source": "<lv_opus>"},
    "lv-video": {"source": "<lv_video>"},
    "lv-file-url": {"source": "file://<lv_0930>"},
}
BAD: dict[str, tuple[dict[str, Any] | str, str]] = {
    "missing": ({"source": "<dir>/not-there.mp3"}, "not_found"),
    "empty": ({"source": "<empty>"}, "empty_audio"),
    "truncated": ({"source": "<truncated_mp3>"}, "corrupt"),
    "png": ({"source": "<png_as_wav>"}, "not_media"),
    "text": ({"source": "<text>"}, "not_media"),
    "video-only": ({"source": "<video_only>"}, "no_audio_stream"),
    "folder": ({"source": "<directory>"}, "not_media"),
    "channel-5": ({"source": "<stereo>", "channel": 5}, "bad_channel"),
    "late-start": ({"source": "<harvard_wav>", "start_s": 600}, "bad_trim"),
    "not-json": ('{"id": "not-json", "source": <harvard_wav>}', "manifest_invalid"),
}
# Interleave good and bad so neither sits in one block of the manifest.
ORDER = [k for pair in zip(GOOD, BAD, strict=True) for k in pair]
WER_REFS = {
    "stereo-right": "stereo",
    "lv-m4a": "lv_m4a",
    "lv-flac": "lv_flac",
    "lv-opus": "lv_opus",
    "lv-video": "lv_video",
    "lv-file-url": "lv_0930",
}


@dataclass
class Batch:
    manifest: Path
    out: Path
    first: subprocess.CompletedProcess[str]
    first_results: bytes
    cli: Callable[..., subprocess.CompletedProcess[str]]

    def run(self, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        proc = self.cli(
            "run",
            str(self.manifest),
            "--out",
            str(self.out),
            "--workers",
            WORKERS,
            "--json",
            *extra,
        )
        return proc, time.monotonic() - t0


def fill(value: Any, media) -> Any:  # type: ignore[no-untyped-def]
    if isinstance(value, str) and "<" in value:
        for key, path in media.files.items():
            value = value.replace(f"<{key}>", str(path))
        return value.replace("<dir>", str(media.dir))
    return value


@pytest.fixture(scope="module")
def batch(one_worker, media, bulkscribe, tmp_path_factory: pytest.TempPathFactory) -> Batch:  # type: ignore[no-untyped-def]
    """The 20-item manifest, run once with all formats."""
    root = tmp_path_factory.mktemp("done-when")
    rows: list[dict[str, Any] | str] = []
    for key in ORDER:
        if key in GOOD:
            rows.append({"id": key, **{k: fill(v, media) for k, v in GOOD[key].items()}})
        elif isinstance(BAD[key][0], str):
            rows.append(fill(BAD[key][0], media))
        else:
            rows.append({"id": key, **{k: fill(v, media) for k, v in BAD[key][0].items()}})
    assert len(rows) == 20
    manifest = write_jsonl(root / "batch.jsonl", rows)
    out = root / "out"
    b = Batch(manifest, out, None, b"", bulkscribe)  # type: ignore[arg-type]
    b.first, _ = b.run()
    b.first_results = (out / "results.jsonl").read_bytes()
    return b


def transcribed(out: Path) -> list[str]:
    return [e["item_id"] for e in log_events(out) if e["event"] == "transcribe.done"]


def attempts(out: Path) -> dict[str, int]:
    return dict(ledger_rows(out, "SELECT key, attempt FROM items"))  # type: ignore[arg-type]


def test_first_run_exits_1_with_one_line_per_item(batch: Batch) -> None:
    """20 lines in manifest order: the 10 good ones SUCCEEDED, the 10 bad FAILED; exit 1."""
    assert batch.first.returncode == 1, batch.first.stderr
    results = read_results(batch.out)
    assert [r["id"] for r in results] == [None if k == "not-json" else k for k in ORDER]
    assert {r["id"]: r["status"] for r in results if r["id"] in GOOD} == dict.fromkeys(
        GOOD, "SUCCEEDED"
    )
    summary = json.loads(batch.first.stdout)
    assert (summary["total"], summary["counts"]) == (20, {"SUCCEEDED": 10, "FAILED": 10})


@pytest.mark.parametrize("item", list(BAD))
def test_bad_item_has_its_code_and_names_its_file(batch: Batch, item: str) -> None:
    """Each bad item is FAILED with its exact code; the message names its source (or line)."""
    results = read_results(batch.out)
    r = results[ORDER.index(item)]
    assert (r["status"], r["error"]["code"]) == ("FAILED", BAD[item][1]), r
    if item == "not-json":
        assert r["error"]["message"].startswith(f"line {ORDER.index(item) + 1}: not valid JSON")
    else:
        assert r["source"] and r["source"] in r["error"]["message"]


def test_good_items_have_outputs_durations_and_speech(batch: Batch, media, wer) -> None:  # type: ignore[no-untyped-def]
    """Good items list all four outputs and their duration; real speech comes out accurately."""
    results = by_id(read_results(batch.out))
    for item in GOOD:
        r = results[item]
        assert r["outputs"] == {f: f"{item}.{f}" for f in ("json", "txt", "srt", "vtt")}
        assert all((batch.out / name).is_file() for name in r["outputs"].values())
    assert results["harvard-trim"]["audio_duration_ms"] == pytest.approx(5500, abs=30)
    assert results["stereo-right"]["audio_duration_ms"] == 3290
    # Judged together: one misheard word in the 8-word clip alone would be 12.5 % WER.
    reference = " ".join(media.refs[ref] for ref in WER_REFS.values())
    hypothesis = " ".join(document_text(batch.out, item) for item in WER_REFS)
    assert wer(reference, hypothesis) < 0.1, hypothesis


def test_the_tone_channel_has_no_speech(batch: Batch) -> None:
    """Channel 0 of the stereo file holds only a tone: picked alone, it transcribes to nothing."""
    doc = json.loads((batch.out / "stereo-left.json").read_text())
    assert doc["properties"]["channels"] == [0, 1]
    assert [(t["channel_id"], t["text"]) for t in doc["transcripts"]] == [(0, "")]
    right = json.loads((batch.out / "stereo-right.json").read_text())
    assert [t["channel_id"] for t in right["transcripts"]] == [1]


def test_timestamps_are_ordered_and_on_the_source_timeline(batch: Batch) -> None:
    """Every document's times are integer ms, ordered and inside the audio; trims keep start_s."""
    for item in GOOD:
        doc = json.loads((batch.out / f"{item}.json").read_text())
        if item == "harvard-trim":
            assert_times_sane(doc, int(TRIM[0] * 1000), int(TRIM[1] * 1000))
            first = doc["transcripts"][0]["sentences"][0]
            assert first["begin_time"] >= TRIM[0] * 1000
            assert first["words"][0]["begin_time"] >= TRIM[0] * 1000
        else:
            assert_times_sane(doc)
        assert doc["transcripts"][0]["sentences"] or item == "stereo-left", item


def test_subtitles_are_valid(batch: Batch) -> None:
    """Every SRT and VTT parses: numbered, well-timed, monotonic cues of at most 2 x 42 chars."""
    cue_counts = {}
    for item in GOOD:
        srt = parse_srt((batch.out / f"{item}.srt").read_text(encoding="utf-8"))
        vtt = parse_vtt((batch.out / f"{item}.vtt").read_text(encoding="utf-8"))
        assert [c[:2] for c in srt] == [c[:2] for c in vtt]
        assert [c[2] for c in srt] == [c[2] for c in vtt]
        cue_counts[item] = len(srt)
        words = " ".join(" ".join(c[2]) for c in srt).split()
        assert words == document_text(batch.out, item).split()
    assert cue_counts["stereo-left"] == 0
    assert all(n >= 1 for k, n in cue_counts.items() if k != "stereo-left")


def test_second_run_does_nothing_and_prints_the_same(batch: Batch) -> None:
    """Run again: under 3 s, no transcription, same attempts, byte-identical results.jsonl."""
    before_events, before_attempts = transcribed(batch.out), attempts(batch.out)
    proc, elapsed = batch.run()
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 3.0
    assert transcribed(batch.out) == before_events
    assert attempts(batch.out) == before_attempts
    assert (batch.out / "results.jsonl").read_bytes() == batch.first_results
    again, first = json.loads(proc.stdout), json.loads(batch.first.stdout)
    assert again["processed"] == 0
    assert (again["counts"], again["failed"]) == (first["counts"], first["failed"])


def test_force_redoes_every_item(batch: Batch) -> None:
    """--force starts a new attempt for all 20 items and transcribes every good one again."""
    before_events, before_attempts = transcribed(batch.out), attempts(batch.out)
    mtimes = {i: (batch.out / f"{i}.json").stat().st_mtime_ns for i in GOOD}
    proc, _ = batch.run("--force")
    assert proc.returncode == 1, proc.stderr
    assert sorted(transcribed(batch.out)[len(before_events) :]) == sorted(GOOD)
    assert attempts(batch.out) == {k: n + 1 for k, n in before_attempts.items()}
    assert all((batch.out / f"{i}.json").stat().st_mtime_ns > m for i, m in mtimes.items())
    redone = read_results(batch.out)
    first = [json.loads(line) for line in batch.first_results.decode().splitlines()]
    assert [(r["id"], r["status"], r["error"]) for r in redone] == [
        (r["id"], r["status"], r["error"]) for r in first
    ]


def test_status_counts_match_results(batch: Batch) -> None:
    """`bulkscribe status --out DIR --json` counts what results.jsonl lists."""
    proc = batch.cli("status", "--out", str(batch.out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    results = read_results(batch.out)
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert report["counts"] == by_status == {"SUCCEEDED": 10, "FAILED": 10}
    assert (report["total"], report["done"]) == (20, True)
    assert {"prepare", "transcribe"} <= set(report["stage_timings"])
    assert report["stage_timings"]["transcribe"]["count"] >= 10
    failed = {f["id"]: f["code"] for f in report["failures"]}
    assert {k: failed[k] for k in BAD if k != "not-json"} == {
        k: code for k, (_, code) in BAD.items() if k != "not-json"
    }


def test_log_lines_name_their_item_and_stage(batch: Batch) -> None:
    """bulkscribe.log is JSON lines; stage events carry item_id and stage, failures their code."""
    events = log_events(batch.out)
    done = [e for e in events if e["event"] in ("prepare.done", "transcribe.done")]
    assert done, "no stage events were logged"
    for e in done:
        assert e["item_id"] in GOOD and e["stage"] == e["event"].split(".")[0]
        assert e["attempt"] >= 1 and e["level"] == "info" and e["timestamp"]
    failed = {e["item_id"]: e["code"] for e in events if e["event"] == "item.failed"}
    assert {k: failed[k] for k in BAD if k in failed} == {
        k: c for k, (_, c) in BAD.items() if k in failed
    }
    assert set(failed) >= set(BAD) - {"not-json"}


def test_new_formats_are_rendered_from_the_stored_json(media, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After a --formats json run, --formats srt writes SRT from the JSON without transcribing."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "a", "source": str(media["lv_0930"])},
            {"id": "b", "source": str(media["lv_0890"]), "start_s": 1.0},
        ],
    )
    out = tmp_path / "out"
    first = run_cli("run", str(manifest), "--out", str(out), "--formats", "json", "--json")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.glob("[ab].*")) == ["a.json", "b.json"]
    assert len(transcribed(out)) == 2
    second = run_cli("run", str(manifest), "--out", str(out), "--formats", "srt", "--json")
    assert second.returncode == 0, second.stderr
    assert len(transcribed(out)) == 2, "rendering SRT must not transcribe again"
    assert attempts(out) == {"a": 1, "b": 1}
    results = by_id(read_results(out))
    assert results["a"]["outputs"] == {"srt": "a.srt", "json": "a.json"}
    for item in ("a", "b"):
        cues = parse_srt((out / f"{item}.srt").read_text())
        doc = json.loads((out / f"{item}.json").read_text())
        sentences = doc["transcripts"][0]["sentences"]
        assert cues[0][0] == sentences[0]["words"][0]["begin_time"]
        assert " ".join(" ".join(c[2]) for c in cues).split() == document_text(out, item).split()
    assert parse_srt((out / "b.srt").read_text())[0][0] >= 1000  # trimmed: source timeline
