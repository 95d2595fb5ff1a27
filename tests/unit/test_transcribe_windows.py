"""Unit tests for pipeline.asr.windows: silence-seeking cuts, window plans, stitching.

Audio is numpy arrays and small WAVs written with the stdlib ``wave`` module; the engine is a
scripted fake, so no model and no ffmpeg run here.
"""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.asr.base import AudioClip
from pipeline.asr.windows import (
    SEARCH_S,
    TAIL_FACTOR,
    Window,
    plan_windows,
    quietest_point,
    transcribe_file,
)
from pipeline.models import AsrOptions, NormalizedAudio
from pipeline.outputs.transcript import Sentence, Transcript, Word

SR = 16_000


def noise(seconds: float, amplitude: int = 8000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-amplitude, amplitude, int(seconds * SR)).astype(np.int16)


def test_quietest_point_finds_the_silent_gap() -> None:
    """In loud noise with 200 ms of silence at 3.0 s, the cut lands inside the silence."""
    x = noise(5.0)
    x[int(3.0 * SR) : int(3.2 * SR)] = 0
    cut = quietest_point(x, SR)
    assert 3.0 <= cut <= 3.2


def test_quietest_point_prefers_the_latest_of_equal_frames() -> None:
    """All-silent audio is cut at the centre of its last 50 ms frame (ties go late)."""
    assert quietest_point(np.zeros(SR, dtype=np.int16), SR) == pytest.approx(0.975)


def test_quietest_point_of_less_than_a_frame_is_its_end() -> None:
    """Audio shorter than one frame is cut at its end."""
    assert quietest_point(np.zeros(100, dtype=np.int16), SR) == pytest.approx(100 / SR)


def windows_of(duration: float, window: float, cut=None) -> list[Window]:  # type: ignore[no-untyped-def]
    asked: list[tuple[float, float]] = []

    def find_cut(lo: float, hi: float) -> float:
        asked.append((lo, hi))
        return cut(lo, hi) if cut else hi

    out = plan_windows(duration, window, find_cut)
    assert len(asked) == len(out) - 1, "find_cut is asked once per boundary"
    return out


def assert_tiles(ws: list[Window], duration: float, window: float) -> None:
    assert ws[0].start_s == 0.0 and ws[-1].end_s == duration
    for a, b in itertools.pairwise(ws):
        assert a.end_s == b.start_s
    assert all(0 < w.end_s - w.start_s <= window + 1e-9 for w in ws), ws


@pytest.mark.parametrize("duration", [5.0, 120.0, 300.0])
def test_short_audio_is_one_window(duration: float) -> None:
    """Audio no longer than the window is a single window over all of it."""
    assert windows_of(duration, 300.0) == [Window(0.0, duration)]


def test_cuts_land_where_find_cut_says_within_the_search_span() -> None:
    """Each cut is find_cut's answer inside [hi - SEARCH_S, hi], hi = start + window_s."""
    spans: list[tuple[float, float]] = []

    def cut(lo: float, hi: float) -> float:
        spans.append((lo, hi))
        return hi - 7.0  # "the silence is 7 s before the nominal boundary"

    ws = windows_of(1000.0, 300.0, cut)
    assert [round(w.end_s, 6) for w in ws[:-1]] == [293.0, 586.0, 879.0]
    assert spans[0] == (300.0 - SEARCH_S, 300.0)
    assert_tiles(ws, 1000.0, 300.0)


def test_find_cut_answers_outside_the_span_are_clamped() -> None:
    """A find_cut that answers 0 or past the end still gives windows within window_s."""
    for bad in (lambda lo, hi: 0.0, lambda lo, hi: 1e9):
        ws = windows_of(1000.0, 300.0, bad)
        assert_tiles(ws, 1000.0, 300.0)
        assert all(w.end_s - w.start_s >= 300.0 - SEARCH_S for w in ws[:-2])


@pytest.mark.parametrize("duration", [301.0, 330.0, 300.0 * TAIL_FACTOR, 650.0, 900.5])
def test_tail_is_never_a_sliver_nor_over_the_window(duration: float) -> None:
    """Whatever the length, no window exceeds window_s and the last is at least 0.2x of it."""
    # A 330 s file used to go out as one 330 s clip: over max_clip_s, which for sync
    # DashScope models is a hard per-request limit.
    ws = windows_of(duration, 300.0)
    assert_tiles(ws, duration, 300.0)
    assert ws[-1].end_s - ws[-1].start_s >= 300.0 * (TAIL_FACTOR - 1) - 1e-9


def test_a_short_remainder_is_halved_near_its_middle() -> None:
    """330 s with 300 s windows: the cut is searched within SEARCH_S/2 of the middle (165 s)."""
    spans: list[tuple[float, float]] = []

    def cut(lo: float, hi: float) -> float:
        spans.append((lo, hi))
        return hi

    assert windows_of(330.0, 300.0, cut) == [Window(0.0, 180.0), Window(180.0, 330.0)]
    assert spans == [(165.0 - SEARCH_S / 2, 165.0 + SEARCH_S / 2)]


def test_a_long_remainder_gets_a_full_window_first() -> None:
    """More than 1.2x the window left: a full window is cut first, the rest follows."""
    ws = windows_of(361.0, 300.0)
    assert ws == [Window(0.0, 300.0), Window(300.0, 361.0)]


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


class ScriptedEngine:
    """Says one word per clip, spanning the whole clip (and 40 ms past it, as engines do)."""

    name = "scripted"

    def __init__(self, max_clip_s: float) -> None:
        self.max_clip_s = max_clip_s
        self.clips: list[float] = []

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        n = len(self.clips)
        self.clips.append(clip.duration_s)
        end = round(clip.duration_s * 1000) + 40
        word = Word(0, end, f"w{n}", ".")
        return Transcript((Sentence(0, end, f"w{n}.", (word,)),), language="en")


def test_transcribe_file_shifts_windows_onto_the_source_timeline(tmp_path: Path) -> None:
    """Window transcripts are shifted by window start + trim offset, clamped, joined in order."""
    x = noise(50.0)
    for s in (14.0, 29.0, 41.0):  # silences the planner should cut in
        x[int(s * SR) : int((s + 0.3) * SR)] = 0
    wav = write_wav(tmp_path / "audio.wav", x)
    engine = ScriptedEngine(max_clip_s=15.0)
    got = transcribe_file(
        NormalizedAudio(wav, 50.0, offset_s=100.0), engine, AsrOptions(), channel_id=1
    )
    assert got.channel_id == 1 and got.language == "en"
    assert [s.text for s in got.sentences] == [f"w{i}." for i in range(len(engine.clips))]
    assert len(engine.clips) >= 4 and max(engine.clips) <= 15.0
    begins = [s.begin_ms for s in got.sentences]
    ends = [s.end_ms for s in got.sentences]
    assert begins[0] == 100_000 and ends[-1] == 150_000
    assert all(e <= b for e, b in zip(ends, begins[1:], strict=False)), "windows overlap"
    first_cut = begins[1] - 100_000
    assert 14_000 <= first_cut <= 14_300, "the first cut should sit in the silence at 14 s"
