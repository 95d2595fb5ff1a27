"""Pure builders: task answers, result documents, stream events, upload policies."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.emulator.catalog import Family
from pipeline.emulator.faults import Fate
from pipeline.emulator.replies import (
    Recognized,
    completion_chunks,
    native_error_event,
    native_events,
    pieces,
)
from pipeline.emulator.schemas import (
    TaskView,
    filetrans_document,
    fmt_time,
    funasr_document,
    task_output,
)
from pipeline.emulator.tasks import FileFailed, FileOk, JobOptions, Status, TaskSpec
from pipeline.emulator.uploads import UploadRejected, check_post, make_policy
from pipeline.models import ProbeResult
from pipeline.outputs.transcript import Sentence, Transcript, Word

PROBE = ProbeResult("wav", "pcm_s16le", 2.5, 1, 16_000, 80_000)
TRANSCRIPT = Transcript(
    (
        Sentence(0, 900, "Hello world.", (Word(0, 400, "Hello"), Word(450, 900, "world", "."))),
        Sentence(1000, 2000, "Bye.", (Word(1000, 2000, "Bye", "."),)),
    ),
    language="en",
)


def view(
    status: Status, outcomes: tuple = (), *, family: Family = Family.FILE_URLS, fate: Fate = Fate.OK
) -> TaskView:
    spec = TaskSpec(
        "t-1",
        0,
        "fun-asr",
        family,
        tuple(o.file_url for o in outcomes) or ("u",),
        JobOptions(),
        1_700_000_000.0,
        1.0,
        fate,
    )
    return TaskView(spec, status, 1_700_000_000.5, 1_700_000_002.0, outcomes, 1_800_000_000.0)


def test_times_use_the_service_format() -> None:
    """Task times read YYYY-MM-DD HH:MM:SS.mmm."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", fmt_time(1_700_000_000.25))


def test_partial_failure_answer() -> None:
    """One good and one failed file: SUCCEEDED, per-file results, metrics and billed seconds."""
    out, usage = task_output(
        view(
            Status.SUCCEEDED,
            (
                FileOk("http://a/1.wav", b"{}", 5.2),
                FileFailed(
                    "http://a/2.wav",
                    "InvalidFile.DownloadFailed",
                    "The audio file cannot be downloaded.",
                ),
            ),
        ),
        lambda i: f"http://r/{i}.json",
    )
    assert out["task_status"] == "SUCCEEDED" and "code" not in out
    assert [r["subtask_status"] for r in out["results"]] == ["SUCCEEDED", "FAILED"]
    assert out["results"][0]["transcription_url"] == "http://r/0.json"
    assert out["results"][1]["code"] == "InvalidFile.DownloadFailed"
    assert out["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 1, "FAILED": 1}
    assert usage == {"duration": 6}
    assert {"submit_time", "scheduled_time", "end_time"} <= set(out)


def test_all_failed_answer_has_top_level_code() -> None:
    """When every file failed the task is FAILED with the first failure's code at the top."""
    out, usage = task_output(
        view(Status.FAILED, (FileFailed("http://a/1.wav", "InvalidFile.DecodeFailed", "x"),)), str
    )
    assert (out["task_status"], out["code"], usage) == ("FAILED", "InvalidFile.DecodeFailed", None)


def test_injected_failure_reads_as_internal_error() -> None:
    """A task fated to fail reports InternalError for every file."""
    out, _ = task_output(view(Status.FAILED, fate=Fate.FAIL), str)
    assert out["code"] == "InternalError"
    assert out["task_metrics"] == {"TOTAL": 1, "SUCCEEDED": 0, "FAILED": 1}


def test_filetrans_answer_has_one_result_and_seconds() -> None:
    """qwen3-asr-flash-filetrans answers with output.result.transcription_url and usage.seconds."""
    out, usage = task_output(
        view(Status.SUCCEEDED, (FileOk("http://a/1.wav", b"{}", 3.1),), family=Family.FILETRANS),
        lambda i: f"http://r/{i}",
    )
    assert out["result"] == {"transcription_url": "http://r/0"}
    assert "results" not in out and usage == {"seconds": 4}


def test_pending_and_unknown_answers_are_minimal() -> None:
    """PENDING carries only submit_time; UNKNOWN only the id and status."""
    pending, _ = task_output(view(Status.PENDING), str)
    assert set(pending) == {"task_id", "task_status", "submit_time", "scheduled_time"}
    unknown, usage = task_output(view(Status.UNKNOWN), str)
    assert (unknown, usage) == ({"task_id": "t-1", "task_status": "UNKNOWN"}, None)


def test_funasr_document_numbers_from_one_and_diarizes_on_request() -> None:
    """Fun-ASR documents count sentences from 1, always have words, speaker_id only if asked."""
    plain = funasr_document("u", PROBE, (TRANSCRIPT,), JobOptions())
    sentences = plain["transcripts"][0]["sentences"]
    assert [s["sentence_id"] for s in sentences] == [1, 2]
    assert all("words" in s and "speaker_id" not in s for s in sentences)
    diarized = funasr_document("u", PROBE, (TRANSCRIPT,), JobOptions(diarization=True))
    assert {s["speaker_id"] for s in diarized["transcripts"][0]["sentences"]} == {0}
    assert plain["properties"]["original_duration_in_milliseconds"] == 2500


def test_filetrans_document_schema() -> None:
    """Filetrans documents: audio_info, ids from 0, language and emotion, words only on request."""
    doc = filetrans_document("u", PROBE, (TRANSCRIPT,), JobOptions(enable_words=False))
    assert doc["audio_info"] == {"format": "wav", "sample_rate": 16_000}
    assert "properties" not in doc
    sentences = doc["transcripts"][0]["sentences"]
    assert [s["sentence_id"] for s in sentences] == [0, 1]
    assert {(s["language"], s["emotion"]) for s in sentences} == {("en", "neutral")}
    assert all("words" not in s for s in sentences)
    words = filetrans_document("u", PROBE, (TRANSCRIPT,), JobOptions(enable_words=True))
    assert words["transcripts"][0]["sentences"][0]["words"][1]["punctuation"] == "."


@pytest.mark.parametrize(
    "text",
    [
        "",
        "one",
        "The birch canoe slid on the smooth planks.",
        "  spaced   out  ",
        "欢迎使用阿里云。",
    ],
)
def test_stream_pieces_join_back_to_the_text(text: str) -> None:
    """Cutting text into stream pieces loses and adds nothing."""
    assert "".join(pieces(text)) == text


def _data(events: list[str]) -> list[dict]:
    return [
        json.loads(line[5:]) for e in events for line in e.splitlines() if line.startswith("data:")
    ]


def test_native_stream_incremental_and_cumulative() -> None:
    """Incremental events carry new text only, cumulative ones the text so far; the last stops."""
    rec = Recognized("The birch canoe slid on the smooth planks.", "en", 3.0)
    inc = _data(list(native_events(rec, "r", incremental=True)))
    cum = _data(list(native_events(rec, "r", incremental=False)))
    texts = [e["output"]["choices"][0]["message"]["content"][0]["text"] for e in inc]
    assert "".join(texts) == rec.text
    assert cum[-1]["output"]["choices"][0]["message"]["content"][0]["text"] == rec.text
    assert [e["output"]["choices"][0]["finish_reason"] for e in inc][-2:] == ["null", "stop"]
    assert all(e["output"]["choices"][0]["message"]["role"] == "assistant" for e in inc + cum)


def test_native_error_event_has_no_space_after_event() -> None:
    """The SDK only recognises ``event:error`` written without a space (§2.6)."""
    event = native_error_event(400, {"code": "InvalidParameter", "message": "m"})
    assert "\nevent:error\n" in event and "status:400" in event


def test_compat_stream_ends_with_usage_then_done() -> None:
    """Chunks end with finish_reason stop, an optional usage chunk, then ``data: [DONE]``."""
    rec = Recognized("Hello there world again.", "en", 1.2)
    with_usage = list(
        completion_chunks(rec, completion_id="c", created=1, model="m", include_usage=True)
    )
    assert with_usage[-1] == "data: [DONE]\n\n"
    usage_chunk = json.loads(with_usage[-2][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["seconds"] == 2
    last = json.loads(with_usage[-3][6:])
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["choices"][0]["delta"]["annotations"][0]["type"] == "audio_info"
    plain = list(
        completion_chunks(rec, completion_id="c", created=1, model="m", include_usage=False)
    )
    assert len(plain) == len(with_usage) - 1


def test_upload_policy_round_trip_and_refusals() -> None:
    """An issued policy accepts its own key and refuses forged, late or out-of-directory posts."""
    secret = b"s" * 32
    data = make_policy(
        secret, model="qwen3-asr-flash", now=1000.0, upload_host="http://h/up", max_file_size_mb=100
    )
    assert len(data) == 10
    fields = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": data["upload_dir"] + "/a.wav",
        "x-oss-forbid-overwrite": "true",
    }
    accepted = check_post(fields, secret, 1001.0)
    assert accepted.key.endswith("/a.wav") and accepted.forbid_overwrite
    for bad, now in (
        ({**fields, "Signature": "AAAA"}, 1001.0),
        (fields, 1000.0 + 301),
        ({**fields, "key": "elsewhere/a.wav"}, 1001.0),
    ):
        with pytest.raises(UploadRejected) as err:
            check_post(bad, secret, now)
        assert err.value.status == 403
