"""Sync recognition: native E4 and OpenAI-compatible E5, plain JSON and SSE (§4, §5)."""

from __future__ import annotations

import json

import httpx
import pytest
from ds_fakes import (
    KEY,
    REQUEST_ID,
    Raising,
    Script,
    body_of,
    compat_chunk,
    error,
    native_event,
    ok,
    sse,
)

from pipeline.asr.dashscope import DashScopeClient, SyncResult
from pipeline.asr.dashscope.params import OMNI_PROMPT
from pipeline.asr.dashscope.sse import SseEvent, iter_events
from pipeline.errors import (
    ConfigError,
    FailureCode,
    ProviderBusy,
    ProviderRejected,
    ProviderUnavailable,
)

AUDIO_URL = "https://a.example/welcome.mp3"
DATA_URI = "data:audio/wav;base64,UklGRg=="
NATIVE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
COMPAT_PATH = "/compatible-mode/v1/chat/completions"

NATIVE_OK = {
    "request_id": REQUEST_ID,
    "output": {
        "choices": [
            {
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": [{"text": "Welcome to Alibaba Cloud."}],
                    "annotations": [{"type": "audio_info", "language": "en", "emotion": "neutral"}],
                },
            }
        ]
    },
    "usage": {"seconds": 1},
}


def test_recognize_sends_the_native_body(script, client) -> None:
    """A plain recognize is one authenticated JSON POST with asr_options and result_format."""
    script.add(ok(NATIVE_OK))
    result = client.recognize("qwen3-asr-flash", AUDIO_URL, language="en")
    req = script.last
    assert (req.method, req.url.path) == ("POST", NATIVE_PATH)
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert "X-DashScope-SSE" not in req.headers
    assert "X-DashScope-OssResourceResolve" not in req.headers
    assert body_of(req) == {
        "model": "qwen3-asr-flash",
        "input": {"messages": [{"role": "user", "content": [{"audio": AUDIO_URL}]}]},
        "parameters": {
            "asr_options": {"enable_itn": False, "language": "en"},
            "result_format": "message",
        },
    }
    assert result == SyncResult(
        "Welcome to Alibaba Cloud.", "en", "neutral", REQUEST_ID, {"seconds": 1}
    )


def test_recognize_oss_audio_with_context(script, client) -> None:
    """An oss:// audio adds the resolve header; context becomes a system message."""
    script.add(ok(NATIVE_OK))
    client.recognize("qwen3-asr-flash", "oss://dir/a.wav", enable_itn=True, context="Qwen, Bailian")
    req = script.last
    assert req.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert body_of(req)["input"]["messages"] == [
        {"role": "system", "content": [{"text": "Qwen, Bailian"}]},
        {"role": "user", "content": [{"audio": "oss://dir/a.wav"}]},
    ]
    assert body_of(req)["parameters"]["asr_options"] == {"enable_itn": True}


def test_recognize_stream_concatenates_incremental_events(script, client) -> None:
    """A native stream asks for incremental output and joins the pieces up to finish."""
    script.add(
        sse(
            native_event(1, "Welcome ")
            + native_event(2, "to Alibaba ")
            + native_event(
                3,
                "Cloud.",
                "stop",
                annotations=[{"type": "audio_info", "language": "en", "emotion": "happy"}],
            )
        )
    )
    result = client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    req = script.last
    assert req.headers["X-DashScope-SSE"] == "enable"
    assert req.headers["Accept"] == "text/event-stream"
    assert body_of(req)["parameters"] == {
        "asr_options": {"enable_itn": False},
        "result_format": "message",
        "incremental_output": True,
    }
    assert result == SyncResult(
        "Welcome to Alibaba Cloud.", "en", "happy", REQUEST_ID, {"seconds": 2}
    )


def test_native_stream_truncated_is_a_bad_response(script, client) -> None:
    """A native stream that stops before finish_reason 'stop' is provider_bad_response."""
    script.add(sse(native_event(1, "Welcome ") + native_event(2, "to")))
    with pytest.raises(ProviderUnavailable) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE
    assert "truncated" in err.value.message


def test_native_stream_cut_mid_json_is_a_bad_response(script, client) -> None:
    """Half an event (the connection ended inside the JSON) is provider_bad_response."""
    script.add(sse(native_event(1, "Welcome ") + 'id:2\nevent:result\ndata:{"output":{"cho'))
    with pytest.raises(ProviderUnavailable) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE


def test_native_event_error_is_mapped_by_status_line(script, client) -> None:
    """``event:error`` with ``status:400`` is a rejection carrying the provider's code."""
    body = {"code": "InvalidParameter", "message": "audio too long", "request_id": REQUEST_ID}
    script.add(
        sse(native_event(1, "We") + f"id:2\nevent:error\nstatus:400\ndata:{json.dumps(body)}\n\n")
    )
    with pytest.raises(ProviderRejected) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.detail["provider_code"] == "InvalidParameter"
    assert err.value.detail["provider_message"] == "audio too long"


def test_native_event_error_throttling_is_busy(script, client) -> None:
    """An in-band Throttling error is ProviderBusy even without a status line."""
    body = {"code": "Throttling.RateQuota", "message": "slow down", "request_id": REQUEST_ID}
    script.add(sse(f"id:1\nevent:error\ndata:{json.dumps(body)}\n\n"))
    with pytest.raises(ProviderBusy):
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)


def test_native_http_status_comment_sets_the_status(script, client) -> None:
    """The service's ``:HTTP_STATUS/500`` comment makes an in-band error transient."""
    body = {"code": "InternalError.Algo.Weird", "message": "boom", "request_id": REQUEST_ID}
    script.add(sse(f"id:1\nevent:error\n:HTTP_STATUS/503\ndata:{json.dumps(body)}\n\n"))
    with pytest.raises(ProviderUnavailable) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.detail["http_status"] == 503


def test_native_data_with_code_is_an_error_without_event_error(script, client) -> None:
    """A data object with a truthy ``code`` is an error even under ``event:result`` (§9)."""
    body = {"code": "InvalidParameter", "message": "bad audio", "request_id": REQUEST_ID}
    script.add(sse(f"id:1\nevent:result\ndata:{json.dumps(body)}\n\n"))
    with pytest.raises(ProviderRejected) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.detail["provider_code"] == "InvalidParameter"


def test_stream_request_answered_with_json_error(script, client) -> None:
    """A streaming request may be refused with a plain JSON error; it maps as usual."""
    script.add(error(401, "InvalidApiKey", "Invalid API-key provided."))
    with pytest.raises(ConfigError) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.code is FailureCode.PROVIDER_AUTH


def test_stream_request_answered_with_plain_json(script, client) -> None:
    """A 200 JSON answer to a streaming request is read as the non-streaming answer."""
    script.add(ok(NATIVE_OK))
    assert client.recognize("qwen3-asr-flash", DATA_URI, stream=True).text == (
        "Welcome to Alibaba Cloud."
    )


def test_read_timeout_mid_stream_is_provider_timeout(script, client) -> None:
    """A stream that stalls after its first event (ReadTimeout) is provider_timeout."""
    script.add(
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=Raising(native_event(1, "We").encode(), httpx.ReadTimeout("stalled")),
        )
    )
    with pytest.raises(ProviderUnavailable) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.code is FailureCode.PROVIDER_TIMEOUT


def test_native_without_output_is_a_bad_response(script, client) -> None:
    """A 200 without ``output.choices`` is provider_bad_response."""
    script.add(ok({"request_id": REQUEST_ID, "output": {}}))
    with pytest.raises(ProviderUnavailable) as err:
        client.recognize("qwen3-asr-flash", AUDIO_URL)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE


def test_chat_transcribe_sends_the_compat_body(script, client) -> None:
    """qwen3-asr-flash over compatible mode: input_audio, top-level asr_options, no stream."""
    script.add(
        ok(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": "欢迎使用阿里云。",
                            "annotations": [
                                {"type": "audio_info", "language": "zh", "emotion": "neutral"}
                            ],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 42, "seconds": 1},
            }
        )
    )
    result = client.chat_transcribe("qwen3-asr-flash", DATA_URI, language="zh", context="阿里云")
    req = script.last
    assert (req.method, req.url.host, req.url.path) == ("POST", "dashscope.test", COMPAT_PATH)
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert body_of(req) == {
        "model": "qwen3-asr-flash",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "阿里云"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": DATA_URI, "format": "wav"}}
                ],
            },
        ],
        "stream": False,
        "asr_options": {"language": "zh"},
    }
    assert (result.text, result.language, result.emotion) == ("欢迎使用阿里云。", "zh", "neutral")
    assert result.request_id == "chatcmpl-1"


def test_chat_stream_joins_deltas_until_done(script, client) -> None:
    """Compat chunks are joined; annotations and the usage chunk are kept; [DONE] ends it."""
    usage = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 42}}
    script.add(
        sse(
            compat_chunk("欢迎", role="assistant")
            + compat_chunk("使用阿里云")
            + compat_chunk(
                "。",
                "stop",
                annotations=[{"type": "audio_info", "language": "zh", "emotion": "neutral"}],
            )
            + f"data: {json.dumps(usage)}\n\n"
            + "data: [DONE]\n\n"
        )
    )
    result = client.chat_transcribe("qwen3-asr-flash", DATA_URI, stream=True)
    body = body_of(script.last)
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
    assert script.last.headers["Accept"] == "text/event-stream"
    assert result == SyncResult(
        "欢迎使用阿里云。", "zh", "neutral", "chatcmpl-1", {"prompt_tokens": 42}
    )


def test_chat_stream_truncated_is_a_bad_response(script, client) -> None:
    """A compat stream ending with neither [DONE] nor a finish_reason is bad_response."""
    script.add(sse(compat_chunk("欢迎", role="assistant") + compat_chunk("使用")))
    with pytest.raises(ProviderUnavailable) as err:
        client.chat_transcribe("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE


def test_chat_stream_error_chunk_is_mapped(script, client) -> None:
    """A mid-stream ``{"error": {...}}`` chunk is raised through the same mapping."""
    chunk = {"error": {"code": "limit_requests", "message": "too many", "type": "x"}}
    script.add(sse(compat_chunk("欢迎", role="assistant") + f"data: {json.dumps(chunk)}\n\n"))
    with pytest.raises(ProviderBusy):
        client.chat_transcribe("qwen3-asr-flash", DATA_URI, stream=True)


def test_omni_is_always_streamed_with_a_transcription_prompt(script, client) -> None:
    """qwen3-omni-flash gets stream=True, text-only output and the verbatim prompt."""
    script.add(sse(compat_chunk("Hello there.", "stop", role="assistant") + "data: [DONE]\n\n"))
    result = client.chat_transcribe("qwen3-omni-flash", DATA_URI, language="en", stream=False)
    assert body_of(script.last) == {
        "model": "qwen3-omni-flash",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": DATA_URI, "format": "wav"}},
                    {"type": "text", "text": OMNI_PROMPT + " The language is en."},
                ],
            }
        ],
        "stream": True,
        "modalities": ["text"],
        "stream_options": {"include_usage": True},
    }
    assert result.text == "Hello there."


def test_chat_without_compat_url_is_a_config_error() -> None:
    """A base URL that is not ``…/api/v1`` needs an explicit compat_base_url."""
    script = Script()
    client = DashScopeClient(
        "https://proxy.test/dashscope", KEY, httpx.Client(transport=httpx.MockTransport(script))
    )
    with pytest.raises(ConfigError):
        client.chat_transcribe("qwen3-asr-flash", DATA_URI)
    assert script.requests == []


def test_sse_framing_handles_both_dialects() -> None:
    """Native ``data:`` and compat ``data: `` lines, comments, status lines and a tail event."""
    lines = [
        "id:1",
        "event:error",
        ":HTTP_STATUS/500",
        "status: 429",
        'data:{"a":1}',
        "",
        ": keep-alive",
        "",
        'data: {"b":2}',
        'data: {"c":3}',
        "",
        "data: [DONE]",
    ]
    assert list(iter_events(lines)) == [
        SseEvent('{"a":1}', "error", 429),
        SseEvent('{"b":2}\n{"c":3}', "message", None),
        SseEvent("[DONE]", "message", None),
    ]


def test_stream_refused_with_an_sse_error_body(script, client) -> None:
    """A non-200 answer whose body is an SSE error event still yields the provider's code."""
    body = {"code": "InvalidParameter", "message": "cannot be decoded", "request_id": REQUEST_ID}
    script.add(
        httpx.Response(
            400,
            headers={"content-type": "text/event-stream;charset=UTF-8"},
            content=f"id:1\nevent:error\nstatus:400\n:HTTP_STATUS/400\n"
            f"data:{json.dumps(body)}\n\n".encode(),
        )
    )
    with pytest.raises(ProviderRejected) as err:
        client.recognize("qwen3-asr-flash", DATA_URI, stream=True)
    assert err.value.detail == {
        "http_status": 400,
        "provider_code": "InvalidParameter",
        "provider_message": "cannot be decoded",
        "request_id": REQUEST_ID,
    }
