"""Engine-neutral transcripts and their DashScope (Fun-ASR) result document.

Engines return a :class:`Transcript` whose times are milliseconds from the start of the
audio they were given. The transcribe stage shifts windows and trims back onto the source
file's timeline; :func:`to_result_document` then builds the JSON users get as ``<id>.json``,
in the schema of DashScope's Fun-ASR file transcription results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.models import ProbeResult

# Characters that end a word and belong in Fun-ASR's ``punctuation`` field rather than
# in ``text``. Whisper glues them to the word ("planks."); Fun-ASR keeps them apart.
_TRAILING_PUNCT = ".,!?;:…。，！？；：、\"'”’)]}"
_SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")


@dataclass(frozen=True, slots=True)
class Word:
    begin_ms: int
    end_ms: int
    text: str
    punctuation: str = ""

    def shifted(self, offset_ms: int) -> Word:
        return replace(self, begin_ms=self.begin_ms + offset_ms, end_ms=self.end_ms + offset_ms)


@dataclass(frozen=True, slots=True)
class Sentence:
    begin_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] = ()
    speaker_id: int | None = None
    language: str | None = None
    emotion: str | None = None

    def shifted(self, offset_ms: int) -> Sentence:
        return replace(
            self,
            begin_ms=self.begin_ms + offset_ms,
            end_ms=self.end_ms + offset_ms,
            words=tuple(w.shifted(offset_ms) for w in self.words),
        )


@dataclass(frozen=True, slots=True)
class Transcript:
    """One channel's recognised speech; times in ms from the start of the audio given."""

    sentences: tuple[Sentence, ...] = ()
    language: str | None = None
    channel_id: int = 0

    @property
    def text(self) -> str:
        return join_texts(s.text for s in self.sentences)

    @property
    def speech_ms(self) -> int:
        return sum(max(0, s.end_ms - s.begin_ms) for s in self.sentences)

    def shifted(self, offset_ms: int) -> Transcript:
        if offset_ms == 0:
            return self
        return replace(self, sentences=tuple(s.shifted(offset_ms) for s in self.sentences))

    @classmethod
    def concat(cls, parts: Sequence[Transcript], *, channel_id: int = 0) -> Transcript:
        """Join window transcripts that are already on one timeline, in order."""
        sentences = tuple(s for p in parts for s in p.sentences)
        language = next((p.language for p in parts if p.language), None)
        return cls(sentences=sentences, language=language, channel_id=channel_id)


@dataclass(frozen=True, slots=True)
class AudioProperties:
    """What the result document says about the source under ``properties``."""

    audio_format: str
    channels: tuple[int, ...]
    original_sampling_rate: int
    original_duration_ms: int


@dataclass(frozen=True, slots=True)
class RawWord:
    """A word as an engine reports it: seconds, punctuation still attached."""

    start_s: float
    end_s: float
    text: str


def split_punctuation(token: str) -> tuple[str, str]:
    """``"planks."`` → ``("planks", ".")``; a token of punctuation only keeps its text."""
    core = token.strip()
    stripped = core.rstrip(_TRAILING_PUNCT)
    if not stripped:
        return core, ""
    return stripped, core[len(stripped) :]


def ms(seconds: float) -> int:
    return int(round(float(seconds) * 1000))


def words_from_raw(raw: Iterable[RawWord]) -> list[Word]:
    """Engine words to Fun-ASR words, with monotonic, non-negative times."""
    out: list[Word] = []
    last_end = 0
    for r in raw:
        text, punct = split_punctuation(r.text)
        if not text:
            continue
        begin = max(ms(r.start_s), last_end if out else 0, 0)
        end = max(ms(r.end_s), begin)
        if out and _continues_word(r.text, text, out[-1]):
            # Whisper starts every word with a space; a token without one ("-hearted"
            # after " cold") is the rest of the word before it. Kept apart, it was joined
            # as "cold -hearted" although the engine's own text says "cold-hearted".
            prev = out[-1]
            out[-1] = Word(prev.begin_ms, end, prev.text + text, punct)
        else:
            out.append(Word(begin, end, text, punct))
        last_end = end
    return out


def _continues_word(token: str, text: str, prev: Word) -> bool:
    """A space-less token with letters or digits after a word with no trailing punctuation.

    CJK is left alone: Whisper never puts spaces there, and each token stays its own word.
    """
    return (
        not token[:1].isspace()
        and not prev.punctuation
        and any(c.isalnum() for c in text)
        and not _is_cjk(text[0])
        and not _is_cjk(prev.text[-1])
    )


def sentences_from_words(
    words: Sequence[Word], *, max_words: int = 60, max_gap_ms: int = 1500
) -> list[Sentence]:
    """Group words into sentences at final punctuation, long pauses, or a length cap."""
    sentences: list[Sentence] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            text = join_texts(w.text + w.punctuation for w in current)
            first, last = current[0], current[-1]
            sentences.append(Sentence(first.begin_ms, last.end_ms, text, tuple(current)))
            current.clear()

    for w in words:
        if current and (w.begin_ms - current[-1].end_ms > max_gap_ms or len(current) >= max_words):
            flush()
        current.append(w)
        if w.punctuation.rstrip("\"'”’)]} ").endswith(_SENTENCE_END) and not _abbreviation(w):
            flush()
    flush()
    return sentences


# Titles and the like whose full stop does not end a sentence ("Mr. Dashwood").
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "sr",
        "jr",
        "vs",
        "mt",
        "no",
        "gen",
        "col",
        "capt",
        "lt",
        "rev",
        "hon",
        "fig",
        "etc",
    }
)


def _abbreviation(w: Word) -> bool:
    return w.punctuation == "." and w.text.lower().rstrip(".") in _ABBREVIATIONS


def join_texts(parts: Iterable[str]) -> str:
    """Join text pieces with single spaces, except around CJK characters."""
    out = ""
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(part[0])):
            out += " "
        out += part
    return out


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3000 <= code <= 0x303F  # CJK punctuation
        or 0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF  # CJK ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def to_result_document(
    file_url: str, props: AudioProperties, transcripts: Sequence[Transcript]
) -> dict[str, Any]:
    """The Fun-ASR result schema: ``file_url``, ``properties``, ``transcripts[]``."""
    return {
        "file_url": file_url,
        "properties": {
            "audio_format": props.audio_format,
            "channels": list(props.channels),
            "original_sampling_rate": props.original_sampling_rate,
            "original_duration_in_milliseconds": props.original_duration_ms,
        },
        "transcripts": [_transcript_json(t) for t in transcripts],
    }


def _transcript_json(t: Transcript) -> dict[str, Any]:
    out: dict[str, Any] = {
        "channel_id": t.channel_id,
        "content_duration_in_milliseconds": t.speech_ms,
        "text": t.text,
    }
    if t.language:
        # The channel's detected (or forced) language. DashScope's qwen filetrans results
        # name it per sentence (``sentences[].language``); one channel-level value is what
        # a reader wants, and sentences keep their own where a provider gave them.
        out["language"] = t.language
    out["sentences"] = [_sentence_json(i, s) for i, s in enumerate(t.sentences, start=1)]
    return out


def _sentence_json(sentence_id: int, s: Sentence) -> dict[str, Any]:
    out: dict[str, Any] = {
        "begin_time": s.begin_ms,
        "end_time": s.end_ms,
        "text": s.text,
        "sentence_id": sentence_id,
    }
    if s.speaker_id is not None:
        out["speaker_id"] = s.speaker_id
    if s.language:
        out["language"] = s.language
    if s.emotion:
        out["emotion"] = s.emotion
    out["words"] = [
        {
            "begin_time": w.begin_ms,
            "end_time": w.end_ms,
            "text": w.text,
            "punctuation": w.punctuation,
        }
        for w in s.words
    ]
    return out


@dataclass(frozen=True, slots=True)
class ResultDocument:
    """A parsed result document: the transcripts plus the properties block."""

    file_url: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    transcripts: tuple[Transcript, ...] = ()

    @property
    def text(self) -> str:
        return "\n".join(t.text for t in self.transcripts if t.text)


def from_result_document(doc: Mapping[str, Any]) -> ResultDocument:
    """Parse a Fun-ASR or Qwen filetrans result document back into transcripts.

    Tolerant of both schemas: ``properties`` or ``audio_info``, ``sentence_id`` from 0 or 1,
    ``words`` present or not.
    """
    transcripts = []
    for t in doc.get("transcripts") or []:
        sentences = []
        for s in t.get("sentences") or []:
            words = tuple(
                Word(
                    int(w.get("begin_time", 0)),
                    int(w.get("end_time", 0)),
                    str(w.get("text", "")).strip(),
                    str(w.get("punctuation", "") or "").strip(),
                )
                for w in s.get("words") or []
            )
            sentences.append(
                Sentence(
                    int(s.get("begin_time", 0)),
                    int(s.get("end_time", 0)),
                    str(s.get("text", "")).strip(),
                    words,
                    speaker_id=s.get("speaker_id"),
                    language=s.get("language"),
                    emotion=s.get("emotion"),
                )
            )
        language = t.get("language") or next((s.language for s in sentences if s.language), None)
        transcripts.append(
            Transcript(
                tuple(sentences), language=language, channel_id=int(t.get("channel_id", 0) or 0)
            )
        )
    props = doc.get("properties") or doc.get("audio_info") or {}
    return ResultDocument(str(doc.get("file_url", "")), props, tuple(transcripts))


# The DashScope result document of one file, as the provider would write it: what persist
# stores for every item and what the emulator serves.
def audio_properties(probe: ProbeResult) -> AudioProperties:
    return AudioProperties(
        audio_format=probe.codec,
        channels=tuple(range(probe.channels)),
        original_sampling_rate=probe.sample_rate,
        original_duration_ms=int(round(probe.duration_s * 1000)),
    )


def build_document(
    file_url: str, probe: ProbeResult, transcripts: Sequence[Transcript]
) -> dict[str, Any]:
    return to_result_document(file_url, audio_properties(probe), transcripts)
