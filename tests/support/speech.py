"""Generated speech and how close a transcript came to it (WER)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

# Harvard sentences (IEEE 1969), list 1: the demo's sentences are the reference texts for
# generated speech, so there is one list.
from pipeline.demo import HARVARD

__all__ = ["HARVARD", "LIBRIVOX_DIR", "ffmpeg", "normalize_words", "say", "wer"]

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def say(text: str, dest: Path, *, voice: str = "en-us", rate: int = 160) -> Path:
    """Speak ``text`` with espeak-ng into a 16 kHz mono WAV."""
    raw = dest.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
    ffmpeg(["-i", str(raw), "-ac", "1", "-ar", "16000", str(dest)])
    raw.unlink()
    return dest


def ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def normalize_words(text: str) -> str:
    """Lowercase, hyphens to spaces, punctuation out, the usual WER normalisation."""
    text = text.lower().replace("-", " ").replace("mr.", "mister").replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalize_words(reference), normalize_words(hypothesis)))
