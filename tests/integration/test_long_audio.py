"""Long audio in windows: a 12-minute file through the CLI with 120 s windows.

The file is the ten Harvard sentences (espeak-ng) after 6 s of silence, looped 22 times, so
it ends in speech and every window boundary has silence nearby to cut in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e import assert_times_sane, ffmpeg, read_results
from support import HARVARD

from pipeline.asr.windows import PcmReader, plan_windows

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.usefixtures("one_worker"),
]

HARVARD_10 = " ".join(HARVARD)
WINDOW_S = 120
LOOPS = 22


@pytest.fixture(scope="module")
def long_wav(say, media_dir: Path) -> Path:  # type: ignore[no-untyped-def]
    """About 12 minutes of 16 kHz mono: (6 s silence + ~32 s of speech) x 22."""
    out = media_dir / "long-12min.wav"
    if out.exists():
        return out
    speech = say(HARVARD_10, media_dir / "harvard10.wav")
    segment = media_dir / "harvard10-seg.wav"
    # -t comes before -i: it bounds the (otherwise endless) silence source itself.
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-t",
            "6",
            "-i",
            "anullsrc=r=16000:cl=mono",
            "-i",
            str(speech),
            "-filter_complex",
            "[0:a][1:a]concat=n=2:v=0:a=1",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-fs",
            "5M",
            str(segment),
        ]
    )
    ffmpeg(
        ["-stream_loop", str(LOOPS - 1), "-i", str(segment), "-c", "copy", "-fs", "50M", str(out)]
    )
    return out


@pytest.fixture(scope="module")
def long_run(one_worker, long_wav: Path, bulkscribe, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("long")
    (root / "m.txt").write_text(f"{long_wav}\n")
    out = root / "out"
    proc = bulkscribe(
        "run",
        str(root / "m.txt"),
        "--out",
        str(out),
        "--json",
        env={"BULKSCRIBE_LOCAL__WINDOW_S": str(WINDOW_S)},
    )
    assert proc.returncode == 0, proc.stderr
    (result,) = read_results(out)
    return json.loads((out / result["outputs"]["json"]).read_text()), result


def test_file_is_about_twelve_minutes(long_wav: Path) -> None:
    """The generated input really is long: 11-13 minutes."""
    with PcmReader(long_wav) as reader:
        assert 660 <= reader.duration_s <= 780


def test_every_window_contributes_and_seams_stay_ordered(long_wav: Path, long_run) -> None:  # type: ignore[no-untyped-def]
    """Six or more 120 s windows; each has sentences in it, and times never go back at a seam."""
    doc, _ = long_run
    with PcmReader(long_wav) as reader:
        windows = plan_windows(reader.duration_s, WINDOW_S, reader.quietest_between)
    assert len(windows) >= 6
    assert all(w.end_s - w.start_s <= WINDOW_S for w in windows)
    assert_times_sane(doc)
    sentences = doc["transcripts"][0]["sentences"]
    for w in windows:
        inside = [s for s in sentences if w.start_s * 1000 <= s["begin_time"] < w.end_s * 1000]
        assert len(inside) >= 5, f"window {w} has {len(inside)} sentences"


def test_transcript_reaches_the_end_of_the_file(long_run) -> None:  # type: ignore[no-untyped-def]
    """The last sentence ends within 15 s of the end of the audio, so no tail was dropped."""
    doc, result = long_run
    end_ms = doc["properties"]["original_duration_in_milliseconds"]
    assert result["audio_duration_ms"] == pytest.approx(end_ms, abs=50)
    last = doc["transcripts"][0]["sentences"][-1]
    assert end_ms - 15_000 <= last["end_time"] <= end_ms


def test_every_repetition_is_transcribed(long_run) -> None:  # type: ignore[no-untyped-def]
    """Each of the 22 repetitions has at least 5 of its 10 sentences, and "truck" ~22 times."""
    doc, _ = long_run
    sentences = doc["transcripts"][0]["sentences"]
    period_ms = doc["properties"]["original_duration_in_milliseconds"] / LOOPS
    per_loop = [0] * LOOPS
    for s in sentences:
        per_loop[min(LOOPS - 1, int(s["begin_time"] // period_ms))] += 1
    assert min(per_loop) >= 5, per_loop
    assert doc["transcripts"][0]["text"].lower().count("truck") >= 18
