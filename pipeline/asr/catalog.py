"""Which models exist, how they are driven, and what each accepts.

One table instead of ``if model.startswith(...)`` scattered through the stages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from pipeline.errors import ConfigError, FailureCode
from pipeline.models import MediaLimits
from pipeline.settings import LimitsSettings

HOUR = 3600.0
GB = 1024**3


class Mode(StrEnum):
    CLIP = "clip"  # transcribed in place, window by window (local, sync DashScope)
    ASYNC = "async"  # uploaded, submitted as a provider task, polled


class Family(StrEnum):
    LOCAL = "local"
    FUN_ASR = "fun-asr"  # Fun-ASR / Paraformer: file_urls batches
    FILETRANS = "filetrans"  # qwen3-asr-flash-filetrans: one file_url per task
    QWEN_ASR = "qwen-asr"  # qwen3-asr-flash, sync
    OMNI = "omni"  # qwen3-omni-flash, OpenAI-compatible stream only


@dataclass(frozen=True, slots=True)
class ModelInfo:
    engine: str
    model: str
    family: Family
    mode: Mode
    limits: MediaLimits  # per source file, checked at probe
    max_clip_s: float | None = None  # per request, for clip models
    max_clip_bytes: int | None = None
    diarization: bool = False
    # Files one provider task may carry: Fun-ASR takes a list of file_urls (up to 100),
    # everything else one file per task. The schedulers batch submissions by this.
    max_files: int = 1


_FILE_LIMITS = MediaLimits(max_duration_s=12 * HOUR, max_bytes=2 * GB)

# Options (manifest fields beyond an item's own, or --option) each family honours: the local
# engine's initial prompt and hotwords; DashScope's request parameters (dashscope/params.py,
# shared/dashscope-protocol.md). A name no family knows is most likely a typo: a warning, or
# manifest_invalid under --strict. A name another family knows fails the item with
# unsupported_option rather than being dropped without a word.
_WORDS = ("enable_words",)
OPTIONS: dict[Family, frozenset[str]] = {
    Family.LOCAL: frozenset({"context", "hotwords", *_WORDS}),
    Family.FUN_ASR: frozenset(
        {
            "vocabulary_id",
            "diarization",
            "diarization_enabled",
            "speaker_count",
            "language_hints",
            "disfluency_removal_enabled",
            "timestamp_alignment_enabled",
            "special_word_filter",
            "audio_event_detection_enabled",
            *_WORDS,
        }
    ),
    Family.FILETRANS: frozenset({"itn", "enable_itn", *_WORDS}),
    Family.QWEN_ASR: frozenset({"itn", "enable_itn", "context"}),
    Family.OMNI: frozenset({"context"}),
}
KNOWN_OPTIONS = frozenset().union(*OPTIONS.values())


def unsupported_options(info: ModelInfo, names: Iterable[str]) -> list[str]:
    """The known option names among ``names`` that ``info``'s model cannot honour."""
    return sorted(n for n in names if n in KNOWN_OPTIONS and n not in OPTIONS[info.family])


def model_info(engine: str, model: str, overrides: LimitsSettings | None = None) -> ModelInfo:
    info = _lookup(engine, model)
    if overrides and (
        overrides.max_duration_s
        or overrides.max_bytes
        or overrides.max_scratch_bytes != info.limits.max_scratch_bytes
    ):
        limits = replace(
            info.limits,
            max_duration_s=overrides.max_duration_s or info.limits.max_duration_s,
            max_bytes=overrides.max_bytes or info.limits.max_bytes,
            max_scratch_bytes=overrides.max_scratch_bytes,
        )
        info = replace(info, limits=limits)
    return info


def _lookup(engine: str, model: str) -> ModelInfo:
    if engine == "local":
        return ModelInfo(engine, model, Family.LOCAL, Mode.CLIP, _FILE_LIMITS)
    if engine != "dashscope":
        raise ConfigError(FailureCode.CONFIG_INVALID, f"unknown engine {engine!r}")
    m = model.lower()
    if m.startswith(("fun-asr", "paraformer", "sensevoice")):
        return ModelInfo(
            engine, model, Family.FUN_ASR, Mode.ASYNC, _FILE_LIMITS, diarization=True, max_files=100
        )
    if m.startswith("qwen3-asr-flash-filetrans"):
        return ModelInfo(engine, model, Family.FILETRANS, Mode.ASYNC, _FILE_LIMITS)
    if m.startswith("qwen3-asr-flash"):
        # 5 min / 10 MB per request; longer files are split at silences, so the file limit
        # is the file-transcription one.
        return ModelInfo(
            engine,
            model,
            Family.QWEN_ASR,
            Mode.CLIP,
            _FILE_LIMITS,
            max_clip_s=180.0,
            max_clip_bytes=10 * 1024**2,
        )
    if "omni" in m:
        return ModelInfo(
            engine,
            model,
            Family.OMNI,
            Mode.CLIP,
            _FILE_LIMITS,
            max_clip_s=180.0,
            max_clip_bytes=10 * 1024**2,
        )
    raise ConfigError(
        FailureCode.CONFIG_INVALID,
        f"unknown DashScope model {model!r}: use fun-asr, paraformer-v2, "
        "qwen3-asr-flash-filetrans, qwen3-asr-flash or qwen3-omni-flash",
    )
