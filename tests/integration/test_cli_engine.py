"""`bulkscribe run` and the local engine: setup checks, the offline rule, the canonical
transcript, engine and subtitle flags, the detected language, and what a run reports.

Real CLI in subprocesses, real ffmpeg and the real tiny.en (base for translation). Anything
that could reach a model hub is pointed at a loopback server that counts requests, with
HF_HUB_OFFLINE unset, so only bulkscribe's own decision keeps it offline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e import BULKSCRIBE, by_id, log_events, read_results, write_jsonl
from support import parse_srt

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]


@pytest.fixture
def hub(http_media, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment that sends any hub request to a loopback server and keeps the cache empty."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(
        HF_ENDPOINT=http_media.url,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
    )
    http_media.hits.clear()
    return env


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BULKSCRIBE), "run", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
    )


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --- 1, 2: setup checked first; offline by default --------------------------------------


def test_model_that_is_not_here_exits_2_at_once(media, hub, http_media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--model small.en (not in the cache, downloads off) exits 2 within seconds with one line
    saying what to do; no file is probed, no item recorded, no hub request made."""
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"{media['harvard_wav']}\n{media['lv_0890']}\n")
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = run(str(manifest), "--out", str(out), "--model", "small.en", env=hub)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 10, elapsed  # the model check alone, no file touched
    line = one_line(proc.stderr)
    assert "small.en" in line and "BULKSCRIBE_LOCAL__ALLOW_DOWNLOAD=true" in line
    assert not (out / "results.jsonl").exists()
    assert not (out / ".bulkscribe" / "ledger.db").exists()
    log = out / "bulkscribe.log"
    assert not log.exists() or "probe" not in log.read_text()
    assert sum(http_media.hits.values()) == 0


def test_item_naming_a_model_that_is_not_here_fails_alone(  # type: ignore[no-untyped-def]
    media, hub, http_media, tmp_path: Path
) -> None:
    """Manifest lines asking for small.en or any hub id fail as model_unavailable, saying how
    to get the model; the other item succeeds and nothing asks the hub."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "hub", "source": str(media["harvard_wav"]), "model": "small.en"},
            {"id": "repo", "source": str(media["harvard_wav"]), "model": "someone/whisper-x"},
            {"id": "ok", "source": str(media["harvard_wav"])},
        ],
    )
    proc = run(str(manifest), "--out", str(tmp_path / "out"), "--formats", "txt", env=hub)
    assert proc.returncode == 1, proc.stderr
    results = by_id(read_results(tmp_path / "out"))
    assert results["ok"]["status"] == "SUCCEEDED"
    error = results["hub"]["error"]
    assert (results["hub"]["status"], error["code"]) == ("FAILED", "model_unavailable")
    assert "BULKSCRIBE_LOCAL__ALLOW_DOWNLOAD" in error["message"]
    assert str(media["harvard_wav"]) in error["message"]
    assert results["repo"]["error"]["code"] == "model_unavailable"
    assert sum(http_media.hits.values()) == 0


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--task", "translate"], {}, "English-only"),
        (["--compute-type", "float16"], {}, "float16"),
        (["--device", "tpu"], {}, "unknown device"),
        (
            ["--engine", "dashscope", "--model", "fun-asr"],
            {"DASHSCOPE_API_KEY": ""},
            "DASHSCOPE_API_KEY",
        ),
        (
            ["--engine", "dashscope", "--model", "fun-asr", "--task", "translate"],
            {"DASHSCOPE_API_KEY": "sk-test"},
            "local engine",
        ),
    ],
    ids=["translate-english-only", "compute-type", "device", "no-key", "translate-dashscope"],
)
def test_setup_errors_are_one_line_and_exit_2(  # type: ignore[no-untyped-def]
    media, tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    """Options that cannot work exit 2 before any file, in one line naming the problem."""
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"{media['harvard_wav']}\n")
    full_env = {**os.environ, **env}
    if env.get("DASHSCOPE_API_KEY") == "":
        del full_env["DASHSCOPE_API_KEY"]
    proc = run(str(manifest), "--out", str(tmp_path / "out"), *args, env=full_env)
    assert proc.returncode == 2, proc.stderr
    assert expected in one_line(proc.stderr)
    assert not (tmp_path / "out" / ".bulkscribe" / "ledger.db").exists()


# --- 3, 5: one canonical transcript per item; the language --------------------------------


@pytest.fixture(scope="module")
def srt_then_txt(media, tmp_path_factory):  # type: ignore[no-untyped-def]
    """`--formats srt`, then the same run with `--formats srt,txt,tsv` (timed)."""
    root = tmp_path_factory.mktemp("formats")
    manifest = write_jsonl(root / "m.jsonl", [{"id": "h", "source": str(media["harvard_wav"])}])
    out = root / "out"
    first = run(str(manifest), "--out", str(out), "--formats", "srt")
    t0 = time.monotonic()
    second = run(str(manifest), "--out", str(out), "--formats", "srt,txt,tsv")
    return out, [first, second], time.monotonic() - t0


def test_later_formats_come_from_the_canonical_transcript(srt_then_txt) -> None:  # type: ignore[no-untyped-def]
    """Without json among the first run's formats, a format added later is rendered from the
    transcript kept under .bulkscribe/transcripts: the model is loaded once in all."""
    out, (first, second), _ = srt_then_txt
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert not (out / "h.json").exists()
    canonical = json.loads((out / ".bulkscribe" / "transcripts" / "h.json").read_text())
    sentences = [s["text"] for s in canonical["transcripts"][0]["sentences"]]
    assert (out / "h.txt").read_text() == "".join(f"{s}\n" for s in sentences)
    tsv = (out / "h.tsv").read_text().splitlines()
    assert tsv[0] == "start\tend\ttext"
    assert [row.split("\t")[2] for row in tsv[1:]] == sentences
    events = [e["event"] for e in log_events(out)]
    assert events.count("model.load") == 1
    assert events.count("transcribe.done") == 1 and events.count("item.rerendered") == 1
    assert by_id(read_results(out))["h"]["outputs"] == {
        "srt": "h.srt",
        "txt": "h.txt",
        "tsv": "h.tsv",
    }


def test_detected_language_is_in_the_transcript_and_results(srt_then_txt) -> None:  # type: ignore[no-untyped-def]
    """Each transcript carries the detected language, and so does the item's results line."""
    out, _, _ = srt_then_txt
    canonical = json.loads((out / ".bulkscribe" / "transcripts" / "h.json").read_text())
    assert canonical["transcripts"][0]["language"] == "en"
    assert by_id(read_results(out))["h"]["language"] == "en"


# --- 4: engine and subtitle flags -----------------------------------------------------------


def test_engine_and_layout_flags_reach_the_engine_and_the_subtitles(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--beam-size, --threads, --no-vad, --compute-type reach the model; --max-line-width
    and --max-line-count shape the cues; tsv times are the JSON's sentence times."""
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "h", "source": str(media["harvard_wav"])}])
    out = tmp_path / "out"
    proc = run(
        str(manifest),
        "--out",
        str(out),
        "--beam-size",
        "2",
        "--threads",
        "1",
        "--no-vad",
        "--compute-type",
        "int8_float32",
        "--max-line-width",
        "24",
        "--max-line-count",
        "1",
        "--formats",
        "json,srt,tsv",
        "--context",
        "Harvard sentences.",
    )
    assert proc.returncode == 0, proc.stderr
    load = next(e for e in log_events(out) if e["event"] == "model.load")
    assert (load["beam_size"], load["threads"], load["vad"], load["compute_type"]) == (
        2,
        1,
        False,
        "int8_float32",
    )
    cues = parse_srt((out / "h.srt").read_text())
    assert cues and all(len(lines) == 1 and len(lines[0]) <= 24 for _, _, lines in cues)
    doc = json.loads((out / "h.json").read_text())
    rows = [line.split("\t") for line in (out / "h.tsv").read_text().splitlines()[1:]]
    assert [(int(b), int(e)) for b, e, _ in rows] == [
        (s["begin_time"], s["end_time"]) for s in doc["transcripts"][0]["sentences"]
    ]


def test_translate_gives_english(say, tmp_path: Path, model_cache: Path) -> None:  # type: ignore[no-untyped-def]
    """--task translate with base turns German speech into English words; results.jsonl
    names the language that was spoken."""
    clip = say(
        "Guten Morgen. Das Wetter ist heute sehr schön. Ich trinke gern Kaffee mit Milch.",
        tmp_path / "de.wav",
        voice="de",
        rate=140,
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "de", "source": str(clip)}])
    proc = run(
        str(manifest),
        "--out",
        str(tmp_path / "out"),
        "--model",
        "base",
        "--task",
        "translate",
        "--formats",
        "txt",
        env={**os.environ, "XDG_CACHE_HOME": str(model_cache)},
    )
    assert proc.returncode == 0, proc.stderr
    words = set(re.findall(r"[a-z]+", (tmp_path / "out" / "de.txt").read_text().lower()))
    assert len(words & {"morning", "weather", "today", "coffee", "milk", "nice"}) >= 3, words
    assert by_id(read_results(tmp_path / "out"))["de"]["language"] == "de"


# --- 6: what a run reports ----------------------------------------------------------------


def test_invalid_lines_count_once_and_items_show_their_own_time(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An invalid line is the run's first failure ([1/4]), not an item already finished, and
    each finished item shows its own time: together no more than the run took."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "a", "source": str(media["lv_0890"])},
            "not json",
            {"id": "b", "source": str(media["lv_0870"])},
            {"id": "c", "source": str(media["lv_0880"])},
        ],
    )
    t0 = time.monotonic()
    proc = run(str(manifest), "--out", str(tmp_path / "out"), "--workers", "1", "--formats", "txt")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    assert "4 item(s), 0 already finished, 4 to do" in proc.stderr
    assert lines[0] == "[1/4] FAILED line 2 manifest_invalid"
    assert [ln.split("]")[0] for ln in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    seconds = [float(m.group(1)) for ln in lines[1:] if (m := re.search(r"\((\d+\.\d) s\)$", ln))]
    assert len(seconds) == 3
    assert sum(seconds) <= elapsed, (seconds, elapsed)
    again = run(str(manifest), "--out", str(tmp_path / "out"), "--formats", "txt")
    assert "4 item(s), 3 already finished, 1 to do" in again.stderr
    assert [ln for ln in again.stderr.splitlines() if ln.startswith("[")] == [
        "[4/4] FAILED line 2 manifest_invalid"
    ]


def test_interrupted_run_writes_results(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C once an item has finished: exit 130, and results.jsonl lists every item, the
    finished ones SUCCEEDED and the rest PENDING."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": f"i{n}", "source": str(media["lv_0890"])} for n in range(6)]
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            str(BULKSCRIBE),
            "run",
            str(manifest),
            "--out",
            str(out),
            "--workers",
            "1",
            "--formats",
            "txt",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a suite started in the background by a shell without job
        # control inherits SIGINT ignored, and Python then leaves it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("i*.txt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    results: list[dict[str, Any]] = read_results(out)
    assert [r["id"] for r in results] == [f"i{n}" for n in range(6)]
    statuses = {r["status"] for r in results}
    assert (
        "SUCCEEDED" in statuses and "PENDING" in statuses and statuses <= {"SUCCEEDED", "PENDING"}
    )
