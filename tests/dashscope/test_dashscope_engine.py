"""The sync-model ClipEngine, text-to-sentence timing, and async result documents."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from ds_fakes import REQUEST_ID, Script, body_of, compat_chunk, make_client, ok, sse

from pipeline.asr.base import AudioClip
from pipeline.asr.dashscope import (
    DashScopeClipEngine,
    split_sentences,
    transcript_from_text,
    transcripts_from_result,
)
from pipeline.asr.dashscope.engine import MAX_DATA_URI_BYTES, max_wav_seconds
from pipeline.errors import ConfigError, FailureCode, PermanentError
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Sentence, Transcript, Word


def _answer(text: str, language: str = "en") -> dict:
    return {
        "request_id": REQUEST_ID,
        "usage": {"seconds": 2},
        "output": {
            "choices": [
                {
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": [{"text": text}],
                        "annotations": [
                            {"type": "audio_info", "language": language, "emotion": "neutral"}
                        ],
                    },
                }
            ]
        },
    }


def _clip(seconds: float, rate: int = 16_000) -> AudioClip:
    t = np.arange(int(seconds * rate)) / rate
    return AudioClip((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), rate)


def _audio_of(request) -> str:
    return body_of(request)["input"]["messages"][-1]["content"][0]["audio"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        ("我很好。谢谢！你呢？", ["我很好。", "谢谢！", "你呢？"]),
        ("It costs 3.5 dollars. Really", ["It costs 3.5 dollars.", "Really"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Wait... what?! OK", ["Wait...", "what?!", "OK"]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("  ", []),
    ],
    ids=["english", "chinese", "decimal", "quote", "ellipsis", "none", "blank"],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    """Text splits at final punctuation, keeping decimals whole and quotes attached."""
    assert split_sentences(text) == expected


def test_transcript_from_text_spreads_time_by_length() -> None:
    """Each sentence gets a share of the clip proportional to its non-space length."""
    t = transcript_from_text("Hello world. How are you?", 10_000, language="en", emotion="neutral")
    assert t == Transcript(
        (
            Sentence(0, 5238, "Hello world.", language="en", emotion="neutral"),
            Sentence(5238, 10_000, "How are you?", language="en", emotion="neutral"),
        ),
        language="en",
    )


def test_transcript_from_empty_text_has_no_sentences() -> None:
    """Silence (empty text) is an empty transcript, not a zero-length sentence."""
    assert transcript_from_text("", 5000, language="zh") == Transcript((), language="zh")


def test_engine_sends_the_clip_as_a_wav_data_uri() -> None:
    """A clip goes to the native endpoint as a base64 WAV data URI with the options mapped."""
    script = Script(ok(_answer("The birch canoe slid. On the smooth planks.")))
    engine = DashScopeClipEngine(make_client(script), "qwen3-asr-flash")
    clip = _clip(2.0)
    t = engine.transcribe(clip, AsrOptions(language="en", itn=True, context="canoe"))

    body = body_of(script.last)
    audio = _audio_of(script.last)
    assert audio.startswith("data:audio/wav;base64,")
    assert base64.b64decode(audio.split(",", 1)[1]) == clip.wav_bytes()
    assert body["parameters"]["asr_options"] == {"enable_itn": True, "language": "en"}
    assert body["input"]["messages"][0] == {"role": "system", "content": [{"text": "canoe"}]}
    assert [(s.begin_ms, s.end_ms, s.text) for s in t.sentences] == [
        (0, 1000, "The birch canoe slid."),
        (1000, 2000, "On the smooth planks."),
    ]
    assert t.language == "en"
    assert all(s.words == () for s in t.sentences)


def test_engine_caps_max_clip_s_below_the_size_limit() -> None:
    """max_clip_s is capped at 180 s so even a 1.2x tail window fits in 10 MB."""
    engine = DashScopeClipEngine(make_client(Script()), "qwen3-asr-flash", max_clip_s=300)
    assert engine.max_clip_s == 180.0
    assert engine.max_clip_s * 1.2 < max_wav_seconds(16_000) < 300


def test_tail_window_data_uri_stays_under_10_mb() -> None:
    """A 216 s clip (180 s x 1.2, the stage's longest window) is one request under 10 MB."""
    script = Script(ok(_answer("Long.")))
    engine = DashScopeClipEngine(make_client(script), "qwen3-asr-flash")
    engine.transcribe(AudioClip(np.zeros(216 * 16_000, np.int16)), AsrOptions())
    assert len(script.requests) == 1
    assert 9_000_000 < len(_audio_of(script.last)) < MAX_DATA_URI_BYTES


def test_over_long_clip_is_split_and_shifted() -> None:
    """A 400 s clip goes as two 200 s requests, the second one's times shifted by 200 s."""
    script = Script(ok(_answer("First part.")), ok(_answer("Second part.")))
    engine = DashScopeClipEngine(make_client(script), "qwen3-asr-flash")
    t = engine.transcribe(AudioClip(np.zeros(400 * 16_000, np.int16)), AsrOptions())
    assert len(script.requests) == 2
    assert all(len(_audio_of(r)) < MAX_DATA_URI_BYTES for r in script.requests)
    assert [(s.begin_ms, s.end_ms, s.text) for s in t.sentences] == [
        (0, 200_000, "First part."),
        (200_000, 400_000, "Second part."),
    ]


def test_engine_refuses_diarization_without_a_request() -> None:
    """Diarization on a sync model is unsupported_option, raised before any request."""
    script = Script()
    engine = DashScopeClipEngine(make_client(script), "qwen3-asr-flash")
    with pytest.raises(PermanentError) as err:
        engine.transcribe(_clip(1.0), AsrOptions(diarization=True))
    assert err.value.code is FailureCode.UNSUPPORTED_OPTION
    assert "diarization" in err.value.message
    assert script.requests == []


def test_empty_clip_needs_no_request() -> None:
    """A zero-sample clip is an empty transcript without calling the provider."""
    script = Script()
    engine = DashScopeClipEngine(make_client(script), "qwen3-asr-flash")
    assert engine.transcribe(AudioClip(np.zeros(0, np.int16)), AsrOptions(language="en")) == (
        Transcript((), language="en")
    )
    assert script.requests == []


def test_omni_engine_uses_the_compatible_stream() -> None:
    """qwen3-omni-flash goes to chat/completions, streamed, with the WAV as input_audio."""
    script = Script(
        sse(compat_chunk("Hello there.", "stop", role="assistant") + "data: [DONE]\n\n")
    )
    engine = DashScopeClipEngine(make_client(script), "qwen3-omni-flash")
    t = engine.transcribe(_clip(1.0), AsrOptions(language="en"))
    req = script.last
    assert req.url.path == "/compatible-mode/v1/chat/completions"
    body = body_of(req)
    assert body["stream"] is True
    audio = body["messages"][-1]["content"][0]["input_audio"]
    assert audio["format"] == "wav" and audio["data"].startswith("data:audio/wav;base64,")
    assert [(s.begin_ms, s.end_ms, s.text) for s in t.sentences] == [(0, 1000, "Hello there.")]
    assert t.language == "en"


@pytest.mark.parametrize("model", ["fun-asr", "qwen3-asr-flash-filetrans", "paraformer-v2"])
def test_engine_refuses_async_models(model: str) -> None:
    """Async-only models cannot be a ClipEngine."""
    with pytest.raises(ConfigError):
        DashScopeClipEngine(make_client(Script()), model)


def test_transcripts_from_funasr_result() -> None:
    """A Fun-ASR document gives one transcript per channel with words and speakers."""
    doc = {
        "file_url": "https://a/x.wav",
        "properties": {"channels": [0]},
        "transcripts": [
            {
                "channel_id": 0,
                "text": "Hello world.",
                "sentences": [
                    {
                        "begin_time": 100,
                        "end_time": 900,
                        "text": "Hello world.",
                        "sentence_id": 1,
                        "speaker_id": 0,
                        "words": [
                            {
                                "begin_time": 100,
                                "end_time": 500,
                                "text": "Hello ",
                                "punctuation": "",
                            },
                            {
                                "begin_time": 500,
                                "end_time": 900,
                                "text": "world",
                                "punctuation": ".",
                            },
                        ],
                    }
                ],
            }
        ],
    }
    [t] = transcripts_from_result(doc)
    assert t.sentences == (
        Sentence(
            100,
            900,
            "Hello world.",
            (Word(100, 500, "Hello"), Word(500, 900, "world", ".")),
            speaker_id=0,
        ),
    )
    assert t.language is None


def test_transcripts_from_filetrans_result_take_the_language() -> None:
    """A filetrans document's per-sentence language becomes the transcript's language."""
    doc = {
        "file_url": "https://a/y.mp3",
        "audio_info": {"format": "mp3"},
        "transcripts": [
            {
                "channel_id": 0,
                "text": "Welcome. 欢迎。",
                "sentences": [
                    {
                        "sentence_id": 0,
                        "begin_time": 200,
                        "end_time": 2000,
                        "text": "Welcome.",
                        "language": "en",
                        "emotion": "neutral",
                    },
                    {
                        "sentence_id": 1,
                        "begin_time": 2000,
                        "end_time": 2500,
                        "text": "欢迎。",
                        "language": "zh",
                        "emotion": "happy",
                    },
                    {
                        "sentence_id": 2,
                        "begin_time": 2500,
                        "end_time": 3000,
                        "text": "Bye.",
                        "language": "en",
                        "emotion": "neutral",
                    },
                ],
            }
        ],
    }
    [t] = transcripts_from_result(doc)
    assert t.language == "en"
    assert [(s.begin_ms, s.text, s.emotion) for s in t.sentences] == [
        (200, "Welcome.", "neutral"),
        (2000, "欢迎。", "happy"),
        (2500, "Bye.", "neutral"),
    ]
