"""DashScope's sync models as a ClipEngine, and async result documents as Transcripts.

Clips go inline as ``data:audio/wav;base64,…`` URIs. The 10 MB request limit counts the
URI *after* base64 (§4): 16 kHz s16 WAV is 32 kB/s raw, 42.7 kB/s encoded, so at most
~234 s fit, not the model's 300 s. We cap clips instead of compressing them:

* WAV size is exact arithmetic (44 + 2·rate·seconds), so the bound is a proof, not a hope;
  FLAC's ratio depends on content (noise barely compresses) and Opus is lossy;
* no ffmpeg subprocess per clip: the engine is tested without ffmpeg, and the transcribe
  queue spends nothing on re-encoding;
* the price is more, shorter requests (180 s instead of 300 s windows): billing is per
  second of audio, so only the request count (~100 RPM quota) grows.

The transcribe stage lets a last window run to 1.2 × ``max_clip_s`` (``TAIL_FACTOR``), so
``max_clip_s`` is capped at 180 s (216 s worst case, 9.2 MB encoded); a clip that still
exceeds the per-request limit is split evenly here, as a safety net.

Sync models return text without timestamps: :func:`transcript_from_text` splits it into
sentences and spreads the clip's span over them by length (words stay empty).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from pipeline.asr.base import AudioClip
from pipeline.asr.dashscope.params import is_filetrans, is_omni, refuse_funasr_only
from pipeline.asr.dashscope.sync import SyncResult
from pipeline.errors import ConfigError, FailureCode, MediaRejected
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Sentence, Transcript, from_result_document

MAX_DATA_URI_BYTES = 10_000_000  # "10 MB" read as decimal: the stricter reading
MAX_REQUEST_S = 300.0  # 5 minutes per request (§4)
DEFAULT_MAX_CLIP_S = 180.0
_WAV_PREFIX = "data:audio/wav;base64,"
_WAV_HEADER = 44

# A sentence ends at CJK final punctuation, or at . ! ? … followed by space, a closing
# quote/bracket or the end (so "3.5" and "e.g.x" stay whole); closers stay with it.
_SENTENCE = re.compile(
    r"""\s*(.+?(?:[。！？]+|[.!?…]+(?=[\s"'”’)\]」』]|\Z)|\Z)["'”’)\]」』]*)""", re.S
)


def max_wav_seconds(sample_rate: int = 16_000) -> float:
    """The longest mono s16 WAV whose data URI fits in ``MAX_DATA_URI_BYTES``."""
    raw = (MAX_DATA_URI_BYTES - len(_WAV_PREFIX)) // 4 * 3 - _WAV_HEADER
    return raw / (2 * sample_rate)


def wav_data_uri(clip: AudioClip) -> str:
    return _WAV_PREFIX + base64.b64encode(clip.wav_bytes()).decode("ascii")


class SyncClient(Protocol):
    """The two sync calls the engine makes: a DashScopeClient, or one wrapped to throttle."""

    def recognize(
        self,
        model: str,
        audio: str,
        *,
        language: str | None = None,
        enable_itn: bool = False,
        context: str | None = None,
        stream: bool = False,
    ) -> SyncResult: ...

    def chat_transcribe(
        self,
        model: str,
        audio_data: str,
        *,
        language: str | None = None,
        context: str | None = None,
        stream: bool = False,
        fmt: str = "wav",
    ) -> SyncResult: ...


class DashScopeClipEngine:
    """qwen3-asr-flash (native E4) or qwen3-omni-flash (OpenAI-compatible E5), clip by clip."""

    name = "dashscope"

    def __init__(
        self,
        client: SyncClient,
        model: str,
        *,
        max_clip_s: float = DEFAULT_MAX_CLIP_S,
        stream: bool = False,
    ) -> None:
        m = model.lower()
        if not (is_omni(m) or (m.startswith("qwen3-asr-flash") and not is_filetrans(m))):
            raise ConfigError(
                FailureCode.CONFIG_INVALID,
                f"{model} is not a sync DashScope model (qwen3-asr-flash, qwen3-omni-flash)",
            )
        self.client = client
        self.model = model
        self.max_clip_s = min(max_clip_s, DEFAULT_MAX_CLIP_S)
        self.stream = stream  # qwen3-asr-flash only; omni always streams

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        """The clip's transcript, times in ms from the clip's start."""
        refuse_funasr_only(options, self.model)
        parts = []
        for offset_ms, piece in _pieces(clip):
            result = self._recognize(piece, options)
            duration_ms = round(piece.duration_s * 1000)
            part = transcript_from_text(
                result.text,
                duration_ms,
                language=result.language or options.language,
                emotion=result.emotion,
            )
            parts.append(part.shifted(offset_ms))
        merged = Transcript.concat(parts)
        return merged if merged.language else replace(merged, language=options.language)

    def _recognize(self, clip: AudioClip, options: AsrOptions) -> SyncResult:
        uri = wav_data_uri(clip)
        if len(uri) > MAX_DATA_URI_BYTES:  # cannot happen after _pieces; a contract check
            raise MediaRejected(
                FailureCode.TOO_LARGE, f"clip encodes to {len(uri)} bytes, over DashScope's 10 MB"
            )
        if is_omni(self.model):
            return self.client.chat_transcribe(
                self.model,
                uri,
                language=options.language,
                context=options.context,
                stream=True,
                fmt="wav",
            )
        return self.client.recognize(
            self.model,
            uri,
            language=options.language,
            enable_itn=options.itn,
            context=options.context,
            stream=self.stream,
        )


def _pieces(clip: AudioClip) -> Iterator[tuple[int, AudioClip]]:
    """(offset_ms, piece): the clip itself, or equal parts each within one request's limits."""
    if clip.samples.size == 0:
        return
    limit_s = min(MAX_REQUEST_S, max_wav_seconds(clip.sample_rate))
    n = math.ceil(clip.duration_s / limit_s)
    start = 0
    for samples in np.array_split(clip.samples, n):
        yield round(start * 1000 / clip.sample_rate), AudioClip(samples, clip.sample_rate)
        start += len(samples)


def split_sentences(text: str) -> list[str]:
    """Sentences at final punctuation, punctuation and closing quotes kept."""
    return [s for m in _SENTENCE.finditer(text) if (s := m.group(1).strip())]


def transcript_from_text(
    text: str, duration_ms: int, *, language: str | None = None, emotion: str | None = None
) -> Transcript:
    """Sentences spread over [0, duration_ms] in proportion to their length (no spaces)."""
    sentences = split_sentences(text)
    weights = [max(1, len("".join(s.split()))) for s in sentences]
    total = sum(weights)
    out, done = [], 0
    for sentence, weight in zip(sentences, weights, strict=True):
        begin = round(duration_ms * done / total)
        done += weight
        end = round(duration_ms * done / total)
        out.append(Sentence(begin, end, sentence, language=language, emotion=emotion))
    return Transcript(tuple(out), language=language)


def transcripts_from_result(doc: Mapping[str, Any]) -> list[Transcript]:
    """An async result document (Fun-ASR or filetrans) as one Transcript per channel."""
    out = []
    for t in from_result_document(doc).transcripts:
        spoken = Counter(s.language for s in t.sentences if s.language)
        language = spoken.most_common(1)[0][0] if spoken else t.language
        out.append(replace(t, language=language))
    return out
