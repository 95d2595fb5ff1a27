"""Benchmark media, generated once into a cache dir (espeak-ng speech, looped by ffmpeg)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.demo import HARVARD

CACHE = Path(os.environ.get("BULKSCRIBE_BENCH_CACHE", "/tmp/bulkscribe-bench"))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def speech_minutes(minutes: float, fmt: str = "wav") -> Path:
    """``minutes`` of speech (Harvard sentences, 22.05 kHz mono), as wav, mp3 or m4a."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"speech-{minutes:g}m.{fmt}"
    if out.exists():
        return out
    base = CACHE / "speech-base.wav"
    if not base.exists():
        text = " ".join(HARVARD * 3)  # about 90 s
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(base), text], check=True)
    codec = {
        "wav": ["-c:a", "pcm_s16le"],
        "mp3": ["-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"],
        "m4a": ["-ac", "2", "-ar", "48000", "-c:a", "aac", "-b:a", "128k"],
    }[fmt]
    _ffmpeg("-stream_loop", "-1", "-i", str(base), "-t", str(minutes * 60), *codec, str(out))
    return out
