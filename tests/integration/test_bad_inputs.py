"""End to end: every kind of bad input fails on its own line, with its code, beside good items.

One manifest holds all of them (local files, broken manifest lines, unsafe ids, http sources
served from a loopback server) and goes through the real ``bulkscribe run`` once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from e2e import WORKERS, by_id, document_text, read_results, write_jsonl

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model, pytest.mark.usefixtures("one_worker")]

CAFE = b"caf\xe9.wav"  # Latin-1 bytes: not a valid UTF-8 file name
MAX_BYTES = 1_000_000  # above every local file here, below what /endless.mp3 sends
ENV = {
    "BULKSCRIBE_DOWNLOAD__READ_TIMEOUT_S": "1",
    "BULKSCRIBE_RETRY__MAX_ATTEMPTS": "2",
    "BULKSCRIBE_RETRY__BACKOFF_BASE_S": "0.1",
    "BULKSCRIBE_LIMITS__MAX_BYTES": str(MAX_BYTES),
}

# id -> (code, what the message must contain besides the source)
LOCAL_BAD = {
    "missing": ("not_found", "does not exist"),
    "empty": ("empty_audio", "is empty (0 bytes)"),
    "zero_wav": ("empty_audio", "no samples"),
    "truncated_mp3": ("corrupt", "truncated or damaged"),
    "png_as_wav": ("not_media", "png"),
    "text": ("not_media", "not audio or video"),
    "video_only": ("no_audio_stream", "h264"),
    "directory": ("not_media", "is a directory"),
}
RAW_LINE = "<the raw bytes of caf\\xe9.wav in a JSONL line>"
BROKEN = '{"id": "broken", "source": '  # a manifest line that is not JSON
HTTP_BAD = {
    "http_slow": ("download_timeout", "timed out"),
    "http_404": ("not_found", "HTTP 404"),
    "http_endless": ("too_large", "sent more than"),
}


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    out: Path
    manifest_rows: list[dict[str, Any] | str]
    sources: dict[str, str]
    results: list[dict[str, Any]]
    before: set[Path]
    after: set[Path]
    hits: dict[str, int]


def files_outside(root: Path, out: Path) -> set[Path]:
    return {p for p in root.rglob("*") if out not in p.parents and p != out}


@pytest.fixture(scope="module")
def bad_run(
    one_worker,
    media,
    http_media,
    bulkscribe: Callable[..., Any],  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """The mixed manifest, run once; with a snapshot of every file outside --out around it."""
    root = tmp_path_factory.mktemp("bad-inputs")
    inputs = root / "in"
    inputs.mkdir()
    cafe = os.path.join(os.fsencode(inputs), CAFE)
    shutil.copyfile(media["lv_0890"], cafe)
    sources = {k: str(media[k]) for k in LOCAL_BAD if k != "missing"}
    sources["missing"] = str(inputs / "never-recorded.wav")
    sources["http_slow"] = http_media.serve_slowly("/slow.wav", delay_s=4)
    sources["http_404"] = http_media.url + "/gone.wav"
    sources["http_endless"] = http_media.serve_endless("/endless.mp3")
    sources["http_good"] = http_media.serve_bytes("/talk.wav", media["lv_0930"].read_bytes())
    rows: list[dict[str, Any] | str] = [{"id": k, "source": v} for k, v in sources.items()]
    rows.insert(3, BROKEN)
    rows.append({"id": "../../escape", "source": str(media["lv_0880"])})
    rows.append({"id": "a//b", "source": str(media["lv_0880"])})
    # JSON cannot hold the raw bytes of a non-UTF-8 name; a percent-encoded file:// URL can.
    sources["in/caf_"] = "file://" + quote(cafe)
    rows.append({"source": sources["in/caf_"]})
    manifest = write_jsonl(root / "manifest.jsonl", rows)
    with manifest.open("ab") as f:  # ...and a line with the raw bytes is itself invalid
        f.write(b'{"source": "in/' + CAFE + b'"}\n')
    rows.append(RAW_LINE)
    out = root / "out"
    scratch = root / "scratch"  # inside the snapshot: leftovers would show up as new files
    scratch.mkdir()
    before = files_outside(root, out)
    proc = bulkscribe(
        "run",
        str(manifest),
        "--out",
        str(out),
        "--workers",
        WORKERS,
        "--json",
        env={**ENV, "BULKSCRIBE_SCRATCH_DIR": str(scratch)},
    )
    return Run(
        proc,
        out,
        rows,
        sources,
        read_results(out),
        before,
        files_outside(root, out),
        dict(http_media.hits),
    )


def test_exit_code_is_1_and_summary_counts(bad_run: Run) -> None:
    """Some items failed, so the run exits 1; the JSON summary counts 2 successes of 17."""
    assert bad_run.proc.returncode == 1, bad_run.proc.stderr
    summary = json.loads(bad_run.proc.stdout)
    assert summary["total"] == len(bad_run.manifest_rows) == 17
    assert summary["counts"] == {"SUCCEEDED": 2, "FAILED": 15}
    assert {f["id"] for f in summary["failed"] if f["id"]} == set(LOCAL_BAD) | set(HTTP_BAD)


def test_one_result_line_per_manifest_line_in_order(bad_run: Run) -> None:
    """results.jsonl is strict UTF-8 JSON with one object per manifest line, in manifest order."""
    ids = [r["id"] for r in bad_run.results]
    expected = [
        row.get("id", "in/caf_") if isinstance(row, dict) else None for row in bad_run.manifest_rows
    ]
    assert ids == [None if i in ("../../escape", "a//b") else i for i in expected]
    for r in bad_run.results:
        assert set(r) == {
            "id",
            "source",
            "status",
            "error",
            "outputs",
            "audio_duration_ms",
            "language",
        }


@pytest.mark.parametrize("item", list(LOCAL_BAD) + list(HTTP_BAD))
def test_bad_input_fails_with_its_code_naming_the_source(bad_run: Run, item: str) -> None:
    """Each bad file or URL is FAILED with its exact code, and the message names it."""
    r = by_id(bad_run.results)[item]
    code, detail = {**LOCAL_BAD, **HTTP_BAD}[item]
    assert (r["status"], r["error"]["code"]) == ("FAILED", code), r
    assert bad_run.sources[item] in r["error"]["message"] and detail in r["error"]["message"]
    assert r["source"] == bad_run.sources[item] and r["outputs"] == {}
    assert not list(bad_run.out.glob(f"{item}.*"))


def test_timeouts_are_retried_to_the_limit_and_404_is_not(bad_run: Run) -> None:
    """The stalled URL is asked BULKSCRIBE_RETRY__MAX_ATTEMPTS (2) times; 404 and oversize once."""
    assert bad_run.hits["/slow.wav"] == 2
    assert bad_run.hits["/gone.wav"] == 1
    assert bad_run.hits["/endless.mp3"] == 1
    assert bad_run.hits["/talk.wav"] == 1


def line_of(run: Run, row: dict[str, Any] | str) -> int:
    """The manifest line number of a row, given the row itself or its id."""
    for n, r in enumerate(run.manifest_rows, 1):
        if r == row or (isinstance(r, dict) and r.get("id") == row):
            return n
    raise LookupError(row)


def test_line_that_is_not_json_fails_alone(bad_run: Run) -> None:
    """The broken line is FAILED manifest_invalid naming its line; its neighbours are unaffected."""
    n = line_of(bad_run, BROKEN)
    r = bad_run.results[n - 1]
    assert (r["id"], r["source"], r["status"]) == (None, None, "FAILED")
    assert r["error"]["code"] == "manifest_invalid"
    assert r["error"]["message"].startswith(f"line {n}: not valid JSON")
    assert bad_run.results[n - 2]["id"] == "truncated_mp3"
    assert bad_run.results[n]["id"] == "png_as_wav"


def test_line_that_is_not_utf8_fails_alone(bad_run: Run) -> None:
    """A JSONL line holding raw Latin-1 bytes is manifest_invalid, naming its line and the byte."""
    n = line_of(bad_run, RAW_LINE)
    r = bad_run.results[n - 1]
    assert (r["status"], r["error"]["code"]) == ("FAILED", "manifest_invalid")
    assert r["error"]["message"].startswith(f"line {n}: not valid UTF-8 (byte 0xe9")


@pytest.mark.parametrize("bad_id", ["../../escape", "a//b"])
def test_unsafe_ids_are_rejected(bad_run: Run, bad_id: str) -> None:
    """An id that could leave --out is manifest_invalid, naming its line, the id and the source."""
    line = line_of(bad_run, bad_id)
    r = bad_run.results[line - 1]
    assert (r["status"], r["error"]["code"]) == ("FAILED", "manifest_invalid")
    assert r["error"]["message"].startswith(f"line {line}: id {bad_id!r} is not a safe file name")
    assert r["source"].endswith("sense_and_sensibility_01_austen_64kb-0880.wav")


def test_nothing_is_written_outside_out(bad_run: Run) -> None:
    """No file appears or vanishes anywhere under the test's directory except inside --out."""
    assert bad_run.after == bad_run.before
    assert not [p for p in bad_run.out.rglob("*") if "escape" in p.name or p.name == "b.json"]


def test_non_utf8_file_name_succeeds_with_a_safe_id(bad_run: Run, media, wer) -> None:  # type: ignore[no-untyped-def]
    """b"in/caf\\xe9.wav" is transcribed as id "in/caf_" (its path under the manifest's
    directory), its source shown with a \\xe9 escape."""
    r = by_id(bad_run.results)["in/caf_"]
    assert r["status"] == "SUCCEEDED", r
    assert r["source"] == bad_run.sources["in/caf_"] and r["source"].endswith("/in/caf%E9.wav")
    assert r["outputs"] == {f: f"in/caf_.{f}" for f in ("json", "txt", "srt", "vtt")}
    # tiny.en's exact wording of this clip varies with the CPU ("cold-hearted"/"coldhearted",
    # "ill disposed"/"old-exposed"): the content check is loose, accuracy is tested elsewhere.
    text = document_text(bad_run.out, "in/caf_")
    assert "rather selfish" in text and wer(media.refs["lv_0890"], text) < 0.35, text


def test_good_http_source_succeeds_and_leaves_no_download(bad_run: Run, media, wer) -> None:  # type: ignore[no-untyped-def]
    """A good http(s) source is downloaded, transcribed, and its scratch copy removed."""
    r = by_id(bad_run.results)["http_good"]
    assert r["status"] == "SUCCEEDED" and r["audio_duration_ms"] == 3290, r
    assert wer(media.refs["lv_0930"], document_text(bad_run.out, "http_good")) < 0.2
    doc = json.loads((bad_run.out / "http_good.json").read_text())
    assert doc["file_url"] == bad_run.sources["http_good"]
    scratch = bad_run.out.parent / "scratch"
    assert list(scratch.iterdir()) == [], "downloads and normalized audio must be cleaned up"
