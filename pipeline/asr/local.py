"""The offline engine: faster-whisper on the CPU, model loaded once per process.

Uses only faster-whisper's public names. ``condition_on_previous_text=False`` keeps one bad
window from poisoning the next (a known Whisper failure mode on long audio), and the VAD
filter drops silence before decoding. Weights never come from the network unless
``local.allow_download`` says so (see :mod:`pipeline.asr.weights`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from pipeline.asr.base import AudioClip
from pipeline.asr.weights import ModelRef, english_only, resolve_model
from pipeline.errors import ConfigError, FailureCode, PermanentError
from pipeline.log import get_logger
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import (
    RawWord,
    Sentence,
    Transcript,
    sentences_from_words,
    words_from_raw,
)
from pipeline.settings import LocalEngineSettings

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = get_logger("bulkscribe.engine")


class LocalEngine:
    """A ClipEngine around one shared ``WhisperModel``."""

    name = "local"

    def __init__(self, model: str, settings: LocalEngineSettings, *, concurrency: int = 1) -> None:
        self.model_name = model
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.max_clip_s = settings.window_s
        self._model: WhisperModel | None = None
        self._ref: ModelRef | None = None
        self._lock = threading.Lock()

    def check(self) -> ModelRef:
        """Resolve and verify the weights without loading them (cheap, for early errors)."""
        if self._ref is None:
            self._ref = resolve_model(
                self.model_name,
                cache_dir=self.settings.download_root,
                allow_download=self.settings.allow_download,
            )
        return self._ref

    def load(self) -> WhisperModel:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel  # heavy import: only when needed

                ref = self.check()
                t0 = time.monotonic()
                threads = self.settings.cpu_threads or max(
                    1, (os.cpu_count() or 1) // self.concurrency
                )
                try:
                    self._model = WhisperModel(
                        ref.location,
                        device=self.settings.device,
                        compute_type=self.settings.compute_type,
                        cpu_threads=threads,
                        num_workers=self.concurrency,
                        local_files_only=ref.local_only,
                        download_root=_opt_str(self.settings.download_root),
                    )
                except Exception as exc:  # hub errors, corrupt files, bad compute type
                    raise ConfigError(
                        FailureCode.MODEL_UNAVAILABLE,
                        f"cannot load model {self.model_name!r}: {type(exc).__name__}: {exc}",
                    ) from exc
                knobs = self.settings
                log.info(
                    "model.load",
                    model=self.model_name,
                    location=ref.location,
                    device=knobs.device,
                    compute_type=knobs.compute_type,
                    threads=threads,
                    beam_size=knobs.beam_size,
                    vad=knobs.vad_filter,
                    task=knobs.task,
                    seconds=round(time.monotonic() - t0, 3),
                )
            return self._model

    @property
    def multilingual(self) -> bool:
        return bool(self.load().model.is_multilingual)

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        knobs = self.settings
        if knobs.task == "translate" and english_only(self.model_name):
            raise unsupported_translate(self.model_name)  # before loading anything
        model = self.load()
        language = options.language
        multilingual = model.model.is_multilingual
        if language and language != "en" and not multilingual:
            raise PermanentError(
                FailureCode.UNSUPPORTED_OPTION,
                f"model {self.model_name} is English-only; use --model base for language "
                f"{language!r}",
            )
        if knobs.task == "translate" and not multilingual:
            raise unsupported_translate(self.model_name)
        try:
            segments, info = model.transcribe(
                clip.as_float32(),
                language=language,
                task=knobs.task,
                beam_size=knobs.beam_size,
                vad_filter=knobs.vad_filter,
                word_timestamps=options.words,
                condition_on_previous_text=False,
                initial_prompt=_first(options.context, knobs.context),
                hotwords=_first(options.hotwords, knobs.hotwords),
            )
            segments = list(segments)  # decoding happens while iterating
        except Exception as exc:
            raise PermanentError(
                FailureCode.ENGINE_FAILED, f"faster-whisper failed: {type(exc).__name__}: {exc}"
            ) from exc
        sentences: list[Sentence] = []
        for seg in segments:
            if seg.words:
                words = words_from_raw(RawWord(w.start, w.end, w.word) for w in seg.words)
                sentences.extend(sentences_from_words(words))
            elif seg.text.strip():
                sentences.append(
                    Sentence(int(seg.start * 1000), int(seg.end * 1000), seg.text.strip())
                )
        return Transcript(tuple(sentences), language=info.language)


def unsupported_translate(model: str) -> ConfigError:
    return ConfigError(
        FailureCode.UNSUPPORTED_OPTION,
        f"model {model} is English-only and cannot translate: use a multilingual model "
        "(--model base)",
    )


def _first(item: str | None, run: str | None) -> str | None:
    """An item's own value wins over the run's; empty means none."""
    return (item if item is not None else run) or None


def _opt_str(value: object) -> str | None:
    return str(value) if value is not None else None
