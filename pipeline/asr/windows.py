"""Transcribe a normalized file with a clip engine, one window at a time.

Whisper extracts features for the whole input at once: a 60-minute array peaks near 4 GB RSS,
5-minute windows stay near 1 GB at the same speed and accuracy. So long audio is read from
the normalized WAV window by window, each cut placed at the quietest moment shortly before
the nominal boundary (so words are not split), and the window transcripts are shifted back
onto the source's timeline and joined.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.asr.base import AudioClip, ClipEngine
from pipeline.models import AsrOptions, NormalizedAudio
from pipeline.outputs.transcript import Transcript

FRAME_S = 0.05  # energy is measured over 50 ms frames
SEARCH_S = 30.0  # how far back from the nominal boundary a cut may move
TAIL_FACTOR = 1.2  # what is left, up to 1.2x the target, is halved rather than cut to a sliver


@dataclass(frozen=True, slots=True)
class Window:
    start_s: float
    end_s: float


def quietest_point(samples: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> float:
    """Offset (s) of the centre of the lowest-energy frame; ties go to the latest frame."""
    n = max(1, int(frame_s * sample_rate))
    frames = len(samples) // n
    if frames == 0:
        return len(samples) / sample_rate
    x = samples[: frames * n].astype(np.float64).reshape(frames, n)
    energy = (x * x).mean(axis=1)
    best = frames - 1 - int(np.argmin(energy[::-1]))
    return (best + 0.5) * n / sample_rate


def plan_windows(
    duration_s: float,
    window_s: float,
    find_cut: Callable[[float, float], float],
) -> list[Window]:
    """Split [0, duration) into windows of at most ``window_s``.

    ``find_cut(lo, hi)`` returns a cut time within [lo, hi]; it is asked once per boundary.
    """
    windows: list[Window] = []
    start = 0.0
    while duration_s - start > window_s:
        remaining = duration_s - start
        if remaining > window_s * TAIL_FACTOR:
            hi = start + window_s
            lo = max(start + window_s / 2, hi - SEARCH_S)
        else:
            # Tail rule: rather than a full window and a sliver after it, cut what is left
            # near its middle. Keeping it whole (as this once did) sent clips up to 1.2x
            # window_s, over max_clip_s, which is a hard per-request limit for sync
            # DashScope models (catalog.py). Both halves stay within window_s.
            mid = start + remaining / 2
            lo = max(duration_s - window_s, mid - SEARCH_S / 2)
            hi = min(start + window_s, mid + SEARCH_S / 2)
        cut = min(max(find_cut(lo, hi), lo), hi)
        windows.append(Window(start, cut))
        start = cut
    windows.append(Window(start, duration_s))
    return windows


class PcmReader:
    """Random access to a 16-bit mono WAV, without reading the whole file."""

    def __init__(self, path: Path) -> None:
        self._wav = wave.open(str(path), "rb")  # noqa: SIM115 - closed by close()/__exit__
        if self._wav.getsampwidth() != 2 or self._wav.getnchannels() != 1:
            raise ValueError(f"{path} is not 16-bit mono PCM")
        self.sample_rate = self._wav.getframerate()
        self.duration_s = self._wav.getnframes() / self.sample_rate

    def read(self, start_s: float, end_s: float) -> np.ndarray:
        first = int(round(start_s * self.sample_rate))
        last = min(int(round(end_s * self.sample_rate)), self._wav.getnframes())
        self._wav.setpos(first)
        return np.frombuffer(self._wav.readframes(max(0, last - first)), dtype="<i2")

    def quietest_between(self, lo: float, hi: float) -> float:
        return lo + quietest_point(self.read(lo, hi), self.sample_rate)

    def close(self) -> None:
        self._wav.close()

    def __enter__(self) -> PcmReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_clips(audio: NormalizedAudio, window_s: float) -> Iterator[tuple[Window, AudioClip]]:
    """Windows of the normalized file with their samples, read lazily one at a time."""
    with PcmReader(audio.path) as reader:
        for window in plan_windows(reader.duration_s, window_s, reader.quietest_between):
            yield window, AudioClip(reader.read(window.start_s, window.end_s), reader.sample_rate)


def transcribe_file(
    audio: NormalizedAudio,
    engine: ClipEngine,
    options: AsrOptions,
    *,
    channel_id: int = 0,
) -> Transcript:
    """The whole file's transcript, times in ms on the source's timeline."""
    parts = []
    for window, clip in iter_clips(audio, engine.max_clip_s):
        part = engine.transcribe(clip, options)
        offset_ms = int(round((audio.offset_s + window.start_s) * 1000))
        length_ms = int(round((window.end_s - window.start_s) * 1000))
        parts.append(_clamp(part, length_ms).shifted(offset_ms))
    return Transcript.concat(parts, channel_id=channel_id)


def _clamp(part: Transcript, length_ms: int) -> Transcript:
    """Engines sometimes report an end a few ms past the clip; keep windows from overlapping."""

    def cap(v: int) -> int:
        return min(v, length_ms)

    sentences = tuple(
        replace(
            s,
            begin_ms=cap(s.begin_ms),
            end_ms=cap(s.end_ms),
            words=tuple(
                replace(w, begin_ms=cap(w.begin_ms), end_ms=cap(w.end_ms)) for w in s.words
            ),
        )
        for s in part.sentences
    )
    return replace(part, sentences=sentences)
