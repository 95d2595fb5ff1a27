"""The engine contract: our own options in, a Transcript out.

Engines that transcribe a clip in place (the local engine, DashScope's sync models) implement
:class:`ClipEngine`. They never see whole files: the transcribe stage feeds them windows no
longer than ``max_clip_s`` and stitches the timestamps back together.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Transcript


@dataclass(frozen=True, slots=True, eq=False)
class AudioClip:
    """A window of 16 kHz mono audio; ``samples`` is int16 PCM."""

    samples: np.ndarray
    sample_rate: int = 16_000

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def as_float32(self) -> np.ndarray:
        return self.samples.astype(np.float32) / 32768.0

    def wav_bytes(self) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(self.samples.astype("<i2").tobytes())
        return buf.getvalue()


class ClipEngine(Protocol):
    """Transcribes one clip; times in the Transcript are ms from the clip's start."""

    name: str
    max_clip_s: float

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript: ...
