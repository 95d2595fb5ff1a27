"""The unmodified dashscope and openai SDKs against the emulator, with real transcripts."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from emulator_support import (
    HTTP,
    FakeClock,
    stats,
    submit,
    wait_for,
)
from support import HARVARD, say, wer

from pipeline.emulator import EmulatorConfig

pytestmark = [pytest.mark.model, pytest.mark.ffmpeg]
MAX_WER = 0.35


@pytest.fixture(autouse=True)
def _served_media(harvard_wav: Path, harvard_mp3: Path) -> None:
    """harvard.wav and harvard.mp3 exist in the served media directory."""


def words_in_order(doc: dict[str, Any]) -> list[tuple[int, int]]:
    """Every word's (begin, end) across the document, checked to be monotonic."""
    spans = [
        (w["begin_time"], w["end_time"])
        for t in doc["transcripts"]
        for s in t["sentences"]
        for w in s.get("words", [])
    ]
    assert all(b <= e for b, e in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    return spans


def test_funasr_transcription_sdk(
    real: str, media_url: str, harvard_text: str, point_sdk: Callable[..., None]
) -> None:
    """Transcription.async_call/wait/fetch on fun-asr yields a real, well-timed transcript."""
    from dashscope.audio.asr import Transcription

    point_sdk(real)
    url = f"{media_url}/harvard.wav"
    submitted = Transcription.async_call(model="fun-asr", file_urls=[url], language_hints=["en"])
    assert (submitted.status_code, submitted.output.task_status) == (200, "PENDING")
    done = Transcription.wait(task=submitted.output.task_id)
    assert done.output.task_status == "SUCCEEDED"
    assert done.output.task_metrics == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    assert 10 <= done.usage.duration <= 14
    result = done.output.results[0]
    assert (result["file_url"], result["subtask_status"]) == (url, "SUCCEEDED")
    doc = httpx.get(result["transcription_url"]).json()  # plain GET, no Authorization
    assert doc["file_url"] == url and doc["properties"]["channels"] == [0]
    transcript = doc["transcripts"][0]
    assert wer(harvard_text, transcript["text"]) < MAX_WER
    assert transcript["sentences"][0]["sentence_id"] == 1
    spans = words_in_order(doc)
    assert (
        len(spans) >= 20 and spans[-1][1] <= doc["properties"]["original_duration_in_milliseconds"]
    )
    fetched = Transcription.fetch(task=submitted.output.task_id)
    assert fetched.output.results == done.output.results


def test_partial_failure_keeps_good_files(real: str, media_url: str) -> None:
    """Good, missing and undecodable files: SUCCEEDED overall with per-file codes."""
    urls = [f"{media_url}/harvard.wav", f"{media_url}/missing.wav", f"{media_url}/garbage.wav"]
    tid = submit(real, "fun-asr", urls).json()["output"]["task_id"]
    out = wait_for(real, tid)["output"]
    assert out["task_status"] == "SUCCEEDED" and "code" not in out
    assert [r["subtask_status"] for r in out["results"]] == ["SUCCEEDED", "FAILED", "FAILED"]
    assert [r.get("code") for r in out["results"]] == [
        None,
        "InvalidFile.DownloadFailed",
        "InvalidFile.DecodeFailed",
    ]
    assert out["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 1, "FAILED": 2}


def test_channels_and_diarization(
    real: str, media_url: str, harvard_mp3: Path, harvard_text: str
) -> None:
    """A stereo MP3 with channel_id [0, 1] gives two transcripts; diarization adds speaker_id."""
    tid = submit(
        real,
        "paraformer-v2",
        [f"{media_url}/{harvard_mp3.name}"],
        channel_id=[0, 1],
        diarization_enabled=True,
        speaker_count=2,
    ).json()["output"]["task_id"]
    out = wait_for(real, tid)["output"]
    doc = HTTP.get(out["results"][0]["transcription_url"]).json()
    assert doc["properties"]["channels"] == [0, 1]
    assert doc["properties"]["audio_format"] == "mp3"
    assert [t["channel_id"] for t in doc["transcripts"]] == [0, 1]
    for t in doc["transcripts"]:
        assert wer(harvard_text, t["text"]) < MAX_WER
        assert {s["speaker_id"] for s in t["sentences"]} == {0}


def test_filetrans_sdk_schema(
    real: str, media_url: str, harvard_text: str, point_sdk: Callable[..., None]
) -> None:
    """QwenTranscription gets the filetrans schema: ids from 0, language, emotion, words on ask."""
    from dashscope.audio.qwen_asr import QwenTranscription

    point_sdk(real)
    url = f"{media_url}/harvard.wav"
    docs = {}
    for words in (True, False):
        task = QwenTranscription.async_call(
            model="qwen3-asr-flash-filetrans", file_url=url, enable_words=words, channel_id=[0]
        )
        done = QwenTranscription.wait(task=task.output.task_id)
        assert done.output.task_status == "SUCCEEDED" and done.usage.seconds >= 10
        docs[words] = httpx.get(done.output.result["transcription_url"]).json()
    doc = docs[True]
    assert doc["audio_info"] == {"format": "wav", "sample_rate": 16_000}
    sentences = doc["transcripts"][0]["sentences"]
    assert [s["sentence_id"] for s in sentences] == list(range(len(sentences)))
    assert {(s["language"], s["emotion"]) for s in sentences} == {("en", "neutral")}
    assert wer(harvard_text, doc["transcripts"][0]["text"]) < MAX_WER
    words_in_order(doc)
    assert all("words" not in s for s in docs[False]["transcripts"][0]["sentences"])


def test_multimodal_local_file_goes_through_upload(
    real: str, harvard_wav: Path, harvard_text: str, point_sdk: Callable[..., None]
) -> None:
    """MultiModalConversation with a local path uploads it (getPolicy, PostObject, oss://)."""
    from dashscope import MultiModalConversation

    point_sdk(real)
    uploads = stats(real)["uploads"]
    messages = [
        {"role": "system", "content": [{"text": ""}]},
        {"role": "user", "content": [{"audio": str(harvard_wav)}]},
    ]
    r = MultiModalConversation.call(
        model="qwen3-asr-flash",
        messages=messages,
        asr_options={"enable_itn": False, "language": "en"},
    )
    assert r.status_code == 200, r.message
    message = r.output.choices[0].message
    assert message.role == "assistant"
    text = message.content[0]["text"]
    assert wer(harvard_text, text) < MAX_WER
    assert message.annotations == [{"type": "audio_info", "language": "en", "emotion": "neutral"}]
    assert r.usage["seconds"] >= 10
    assert stats(real)["uploads"] == uploads + 1

    cumulative = list(
        MultiModalConversation.call(
            model="qwen3-asr-flash", messages=messages, stream=True, incremental_output=False
        )
    )
    assert len(cumulative) > 1 and all(e.status_code == 200 for e in cumulative)
    assert cumulative[-1].output.choices[0].message.content[0]["text"] == text
    incremental = list(
        MultiModalConversation.call(
            model="qwen3-asr-flash", messages=messages, stream=True, incremental_output=True
        )
    )
    pieces = [e.output.choices[0].message.content[0]["text"] for e in incremental]
    assert "".join(pieces) == text and incremental[-1].output.choices[0].finish_reason == "stop"


def test_openai_compatible_asr_and_omni(real: str, harvard_wav: Path, harvard_text: str) -> None:
    """openai chat.completions: qwen3-asr-flash streamed and not, qwen3-omni-flash streamed."""
    client = openai.OpenAI(api_key="sk-test", base_url=f"{real}/compatible-mode/v1", max_retries=0)
    data_uri = "data:audio/wav;base64," + base64.b64encode(harvard_wav.read_bytes()).decode()
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": data_uri, "format": "wav"}}
            ],
        }
    ]
    plain = client.chat.completions.create(
        model="qwen3-asr-flash",
        messages=messages,
        extra_body={"asr_options": {"enable_itn": False}},
    )
    text = plain.choices[0].message.content or ""
    assert wer(harvard_text, text) < MAX_WER
    assert plain.choices[0].finish_reason == "stop" and plain.usage is not None
    for model in ("qwen3-asr-flash", "qwen3-omni-flash"):
        chunks = list(
            client.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0


def test_same_file_is_transcribed_once(real: str, media_dir: Path, media_url: str) -> None:
    """Two tasks over the same bytes under different URLs cost one transcription."""
    name = "cache-check.wav"
    if not (media_dir / name).exists():
        say(HARVARD[5], media_dir / name)
    before = stats(real)
    ids = [
        submit(real, "fun-asr", [f"{media_url}/{name}?copy={i}"]).json()["output"]["task_id"]
        for i in range(3)
    ]
    texts = {
        HTTP.get(wait_for(real, t)["output"]["results"][0]["transcription_url"]).json()[
            "transcripts"
        ][0]["text"]
        for t in ids
    }
    after = stats(real)
    assert len(texts) == 1 and wer(HARVARD[5], texts.pop()) < MAX_WER
    assert after["transcriptions"] - before["transcriptions"] == 1
    assert after["cache_hits"] - before["cache_hits"] == 2


def test_result_urls_expire_with_the_task(
    start: Callable[..., str], tiny_engine: Any, media_url: str
) -> None:
    """A result URL serves the document until task_ttl_s after the end, then answers 403."""
    clock = FakeClock()
    base = start(EmulatorConfig(latency_s=2, task_ttl_s=3600), engine=tiny_engine, clock=clock)
    tid = submit(base, "fun-asr", [f"{media_url}/harvard.wav"]).json()["output"]["task_id"]
    assert wait_for(base, tid, {"RUNNING"})["output"]["task_status"] == "RUNNING"
    clock.advance(2)
    out = wait_for(base, tid)["output"]
    assert out["task_status"] == "SUCCEEDED"
    url = out["results"][0]["transcription_url"]
    assert HTTP.get(url).status_code == 200
    clock.advance(3600)
    assert HTTP.get(url).status_code == 403
    assert wait_for(base, tid)["output"]["task_status"] == "UNKNOWN"
