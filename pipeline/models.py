"""Frozen values passed between stages.

Stages never hand each other dicts: a misspelt field fails at construction, and no stage can
edit what the next one sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ManifestItem:
    """One manifest line that parsed into something transcribable."""

    item_id: str
    source: str  # path, file://, http(s)://, s3://, oss://
    line_no: int  # lets an error say "manifest line 42"
    language: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    model: str | None = None
    channel: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # extra provider options, sorted (key, value)

    def spec(self) -> dict[str, Any]:
        """What the item asks for, as stored in the ledger (and fingerprinted)."""
        return {
            "source": self.source,
            "language": self.language,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "model": self.model,
            "channel": self.channel,
            "options": dict(self.options),
        }


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """A manifest line that could not become an item; it fails on its own."""

    line_no: int
    code: str  # a FailureCode value
    message: str
    item_id: str | None = None
    source: str | None = None


# Scratch one item may fill: 12 hours (the longest any model takes) of 16 kHz mono 16-bit
# PCM, plus 5 % for headers and slack: 1.45 GB.
DEFAULT_MAX_SCRATCH_BYTES = int(12 * 3600 * 16_000 * 2 * 1.05)


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What a target model accepts, checked at probe time, and how much scratch space one
    item may fill while it is normalized."""

    max_duration_s: float = 12 * 3600
    max_bytes: int = 2 * 1024**3
    min_duration_s: float = 0.01
    # Below this no speech survives (telephony is 8 kHz), and a tiny file claiming hours at
    # 1 Hz would otherwise decode to gigabytes of scratch.
    min_sample_rate: int = 4_000
    max_scratch_bytes: int = DEFAULT_MAX_SCRATCH_BYTES  # normalized audio, per item


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What ffprobe said about a source, reduced to what the pipeline uses."""

    container: str
    codec: str
    duration_s: float
    channels: int
    sample_rate: int
    size_bytes: int
    stream_index: int = 0
    exact_duration: bool = True  # the duration is the audio stream's own, not the container's

    def as_dict(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "codec": self.codec,
            "duration_s": self.duration_s,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "size_bytes": self.size_bytes,
            "stream_index": self.stream_index,
            "exact_duration": self.exact_duration,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})


@dataclass(frozen=True, slots=True)
class NormalizeSpec:
    """The shape every engine is fed: 16 kHz mono 16-bit PCM."""

    sample_rate: int = 16_000
    channels: int = 1
    codec: str = "pcm_s16le"


@dataclass(frozen=True, slots=True)
class NormalizedAudio:
    """A normalized WAV in scratch space, plus where it sits on the source timeline."""

    path: Path
    duration_s: float
    offset_s: float = 0.0  # start_s of the trim: add to every time to reach the source timeline
    sample_rate: int = 16_000


@dataclass(frozen=True, slots=True)
class AsrOptions:
    """What a caller may ask of any engine; engines map it field by field."""

    language: str | None = None
    words: bool = True
    itn: bool = False
    vocabulary_id: str | None = None
    diarization: bool = False
    speaker_count: int | None = None
    context: str | None = None  # biasing text: Whisper's initial prompt, sync Qwen models
    hotwords: str | None = None  # words to favour (local engine)
    extra: tuple[tuple[str, Any], ...] = field(default=())


def human_bytes(n: float) -> str:
    """``2147483648`` → ``"2.1 GB"``, ``50000`` → ``"50 kB"``: sizes in messages people read."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{int(n)} bytes"
