"""Async task API over a scripted transport: submit, query, cancel, result download (§3)."""

from __future__ import annotations

import httpx
import pytest
from ds_fakes import BASE, KEY, REQUEST_ID, TASK_ID, body_of, make_client, ok

from pipeline.asr.dashscope import DashScopeClient, FileResult, Submitted
from pipeline.errors import (
    ConfigError,
    FailureCode,
    PermanentError,
    ProviderUnavailable,
    TransientError,
)

SUBMITTED = {"request_id": REQUEST_ID, "output": {"task_id": TASK_ID, "task_status": "PENDING"}}


def test_submit_funasr_sends_file_urls_async_header_and_parameters(script, client) -> None:
    """A Fun-ASR submit is an authenticated async POST with input.file_urls and parameters."""
    script.add(ok(SUBMITTED))
    urls = ["https://a.example/a.wav", "https://a.example/b.wav"]
    submitted = client.submit_transcription("fun-asr", urls, {"language_hints": ["zh"]})

    req = script.last
    assert (req.method, req.url.path) == ("POST", "/api/v1/services/audio/asr/transcription")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["X-DashScope-Async"] == "enable"
    assert "X-DashScope-OssResourceResolve" not in req.headers
    assert req.headers["Content-Type"].startswith("application/json")
    assert body_of(req) == {
        "model": "fun-asr",
        "input": {"file_urls": urls},
        "parameters": {"language_hints": ["zh"]},
    }
    assert submitted == Submitted(TASK_ID, REQUEST_ID, "PENDING")


def test_submit_always_sends_parameters_even_when_empty(script, client) -> None:
    """``parameters: {}`` is sent, as the workspace domain requires (§1.1)."""
    script.add(ok(SUBMITTED))
    client.submit_transcription("paraformer-v2", ["https://a.example/a.wav"], {})
    assert body_of(script.last)["parameters"] == {}


def test_submit_filetrans_sends_a_single_file_url(script, client) -> None:
    """qwen3-asr-flash-filetrans takes ``input.file_url``, a string, not a list."""
    script.add(ok(SUBMITTED))
    params = {"enable_itn": False, "enable_words": True, "language": "en"}
    client.submit_transcription("qwen3-asr-flash-filetrans", ["https://a.example/a.mp3"], params)
    assert body_of(script.last) == {
        "model": "qwen3-asr-flash-filetrans",
        "input": {"file_url": "https://a.example/a.mp3"},
        "parameters": params,
    }


@pytest.mark.parametrize(
    ("model", "count"),
    [
        ("qwen3-asr-flash-filetrans", 2),
        ("qwen3-asr-flash-filetrans", 0),
        ("fun-asr", 101),
        ("fun-asr", 0),
    ],
)
def test_submit_refuses_wrong_url_counts_without_sending(script, client, model, count) -> None:
    """Filetrans takes exactly one URL and Fun-ASR 1..100; nothing goes on the wire otherwise."""
    urls = [f"https://a.example/{i}.wav" for i in range(count)]
    with pytest.raises(PermanentError) as err:
        client.submit_transcription(model, urls, {})
    assert err.value.code is FailureCode.CONFIG_INVALID
    assert script.requests == []


def test_submit_with_oss_url_adds_the_resolve_header(script, client) -> None:
    """Any ``oss://`` URL makes the submit carry X-DashScope-OssResourceResolve."""
    script.add(ok(SUBMITTED))
    client.submit_transcription("fun-asr", ["https://a.example/a.wav", "oss://dir/b.wav"], {})
    assert script.last.headers["X-DashScope-OssResourceResolve"] == "enable"


def test_submit_oss_resolve_flag_forces_the_header(script, client) -> None:
    """``oss_resolve=True`` adds the header even for http URLs."""
    script.add(ok(SUBMITTED))
    client.submit_transcription("fun-asr", ["https://a.example/a.wav"], {}, oss_resolve=True)
    assert script.last.headers["X-DashScope-OssResourceResolve"] == "enable"


def test_submit_without_task_status_is_a_bad_response(script, client) -> None:
    """A 200 submit answer lacking output.task_status is provider_bad_response (transient)."""
    script.add(ok({"request_id": REQUEST_ID, "output": {"task_id": TASK_ID}}))
    with pytest.raises(ProviderUnavailable) as err:
        client.submit_transcription("fun-asr", ["https://a.example/a.wav"], {})
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE
    assert err.value.detail["request_id"] == REQUEST_ID


def test_missing_api_key_fails_locally(script) -> None:
    """Without a key the client refuses before sending anything, like the SDK."""
    client = make_client(script, api_key=None)
    with pytest.raises(ConfigError) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_AUTH
    assert script.requests == []


def test_query_is_a_plain_get_without_async_header(script, client) -> None:
    """Task queries are GET /tasks/{id}, authenticated, without X-DashScope-Async or a body."""
    script.add(
        ok({"request_id": REQUEST_ID, "output": {"task_id": TASK_ID, "task_status": "RUNNING"}})
    )
    status = client.query_task(TASK_ID)
    req = script.last
    assert (req.method, req.url.path) == ("GET", f"/api/v1/tasks/{TASK_ID}")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert "X-DashScope-Async" not in req.headers
    assert req.content == b""
    assert (status.status, status.results, status.terminal) == ("RUNNING", (), False)


@pytest.mark.parametrize(
    ("times", "queued_s"),
    [
        (
            {"submit_time": "2024-09-12 15:11:40.041", "scheduled_time": "2024-09-12 15:11:49.071"},
            9.03,
        ),
        ({"submit_time": "2024-09-12 15:11:40.041"}, None),  # PENDING: not started yet
        ({"submit_time": "2024-09-12 15:11:40.041", "scheduled_time": "soon"}, None),
        ({"submit_time": "2024-09-12 15:11:40.041", "scheduled_time": 17}, None),
        ({"submit_time": "2024-09-12 15:11:40", "scheduled_time": "2024-09-12 15:11:41.000"}, None),
        # started before it was submitted: a time we cannot trust
        (
            {"submit_time": "2024-09-12 15:11:40.041", "scheduled_time": "2024-09-12 15:11:39.000"},
            None,
        ),
    ],
)
def test_query_reads_how_long_the_task_queued(script, client, times, queued_s) -> None:
    """submit_time to scheduled_time, both the provider's clock: the poll's pacing is
    counted from there. A time missing or unreadable leaves it unknown, never an error."""
    output = {"task_id": TASK_ID, "task_status": "RUNNING", **times}
    script.add(ok({"request_id": REQUEST_ID, "output": output}))
    status = client.query_task(TASK_ID)
    assert status.queued_s == (pytest.approx(queued_s) if queued_s is not None else None)


def test_query_parses_funasr_partial_failure(script, client) -> None:
    """A SUCCEEDED Fun-ASR task keeps each file's own status, code and message."""
    script.add(
        ok(
            {
                "request_id": REQUEST_ID,
                "usage": {"duration": 6},
                "output": {
                    "task_id": TASK_ID,
                    "task_status": "SUCCEEDED",
                    "results": [
                        {
                            "file_url": "https://a.example/a.mp3",
                            "transcription_url": "https://oss/r1.json",
                            "subtask_status": "SUCCEEDED",
                        },
                        {
                            "file_url": "https://a.example/b.wav",
                            "code": "InvalidFile.DownloadFailed",
                            "message": "The audio file cannot be downloaded.",
                            "subtask_status": "FAILED",
                        },
                    ],
                    "task_metrics": {"TOTAL": 2, "SUCCEEDED": 1, "FAILED": 1},
                },
            }
        )
    )
    status = client.query_task(TASK_ID)
    assert status.status == "SUCCEEDED"
    assert status.results == (
        FileResult("https://a.example/a.mp3", "SUCCEEDED", "https://oss/r1.json"),
        FileResult(
            "https://a.example/b.wav",
            "FAILED",
            None,
            "InvalidFile.DownloadFailed",
            "The audio file cannot be downloaded.",
        ),
    )
    assert dict(status.usage or {}) == {"duration": 6}
    assert status.request_id == REQUEST_ID


def test_query_normalises_filetrans_result(script, client) -> None:
    """Filetrans' single ``output.result`` becomes one FileResult with its transcription_url."""
    script.add(
        ok(
            {
                "request_id": REQUEST_ID,
                "usage": {"seconds": 3},
                "output": {
                    "task_id": TASK_ID,
                    "task_status": "SUCCEEDED",
                    "result": {"transcription_url": "https://oss/result.json?Signature=x"},
                },
            }
        )
    )
    status = client.query_task(TASK_ID)
    assert status.results == (FileResult("", "SUCCEEDED", "https://oss/result.json?Signature=x"),)
    assert status.results[0].succeeded
    assert dict(status.usage or {}) == {"seconds": 3}


def test_query_failed_task_keeps_provider_code(script, client) -> None:
    """A FAILED task is a status with the provider's code and message, not an exception."""
    script.add(
        ok(
            {
                "request_id": REQUEST_ID,
                "output": {
                    "task_id": TASK_ID,
                    "task_status": "FAILED",
                    "code": "InvalidFile.DownloadFailed",
                    "message": "The audio file cannot be downloaded.",
                    "results": [
                        {
                            "file_url": "https://a.example/a.m4a",
                            "subtask_status": "FAILED",
                            "code": "InvalidFile.DownloadFailed",
                            "message": "The audio file cannot be downloaded.",
                        }
                    ],
                },
            }
        )
    )
    status = client.query_task(TASK_ID)
    assert (status.status, status.code) == ("FAILED", "InvalidFile.DownloadFailed")
    assert status.results[0].status == "FAILED"


def test_query_unknown_is_a_status_not_an_error(script, client) -> None:
    """An expired or foreign task id answers 200 UNKNOWN, which is returned as such."""
    script.add(
        ok({"request_id": REQUEST_ID, "output": {"task_id": TASK_ID, "task_status": "UNKNOWN"}})
    )
    status = client.query_task(TASK_ID)
    assert (status.status, status.terminal, status.results) == ("UNKNOWN", True, ())


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": REQUEST_ID, "output": {"task_id": TASK_ID}},
        {"request_id": REQUEST_ID, "output": {"task_id": TASK_ID, "task_status": "SUCCEEDED"}},
        {
            "request_id": REQUEST_ID,
            "output": {
                "task_id": TASK_ID,
                "task_status": "SUCCEEDED",
                "results": [{"file_url": "u"}],
            },
        },
        {
            "request_id": REQUEST_ID,
            "output": {
                "task_id": TASK_ID,
                "task_status": "SUCCEEDED",
                "results": [{"subtask_status": "SUCCEEDED"}],
            },
        },
        {"request_id": REQUEST_ID, "output": "oops"},
    ],
    ids=["no-task_status", "succeeded-no-results", "no-subtask_status", "no-url", "output-str"],
)
def test_query_missing_required_fields_is_a_bad_response(script, client, body) -> None:
    """A 200 query answer without the fields the pipeline needs is provider_bad_response."""
    script.add(ok(body))
    with pytest.raises(ProviderUnavailable) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE


def test_query_body_that_is_not_json_is_a_bad_response(script, client) -> None:
    """A 200 with an HTML body (a proxy answering) is provider_bad_response."""
    script.add(httpx.Response(200, text="<html>gateway</html>"))
    with pytest.raises(ProviderUnavailable) as err:
        client.query_task(TASK_ID)
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE
    assert "gateway" in err.value.message


def test_cancel_posts_to_the_cancel_path(script, client) -> None:
    """Cancel is an authenticated POST /tasks/{id}/cancel."""
    script.add(ok({"request_id": REQUEST_ID}))
    client.cancel_task(TASK_ID)
    req = script.last
    assert (req.method, req.url.path) == ("POST", f"/api/v1/tasks/{TASK_ID}/cancel")
    assert req.headers["Authorization"] == f"Bearer {KEY}"


def test_fetch_result_sends_no_authorization(script) -> None:
    """The signed result URL is fetched without our key, even if the http client carries one."""
    client = make_client(script, headers={"Authorization": "Bearer leaked"})
    doc = {"file_url": "https://a.example/a.wav", "transcripts": []}
    script.add(httpx.Response(200, json=doc, headers={"content-type": "application/octet-stream"}))
    url = "https://result.oss.test/prod/r.json?Expires=1&Signature=abc"
    assert client.fetch_result(url) == doc
    req = script.last
    assert (req.method, str(req.url)) == ("GET", url)
    assert "Authorization" not in req.headers


def test_fetch_expired_result_is_result_expired(script, client) -> None:
    """OSS's 403 on an expired signed URL is result_expired (transient: transcribe again),
    not an auth problem."""
    script.add(
        httpx.Response(
            403,
            content=b"<?xml version='1.0'?><Error><Code>AccessDenied"
            b"</Code><Message>Request has expired.</Message>"
            b"<RequestId>OSS1</RequestId></Error>",
        )
    )
    with pytest.raises(TransientError) as err:
        client.fetch_result("https://result.oss.test/r.json")
    assert err.value.code is FailureCode.RESULT_EXPIRED
    assert err.value.detail["provider_code"] == "AccessDenied"
    assert err.value.detail["request_id"] == "OSS1"


def test_compat_base_is_derived_from_native_base() -> None:
    """``…/api/v1`` maps to ``…/compatible-mode/v1``; an explicit value wins."""
    http = httpx.Client()
    assert DashScopeClient(BASE + "/", KEY, http).compat_base_url == (
        "https://dashscope.test/compatible-mode/v1"
    )
    assert DashScopeClient(BASE, KEY, http, compat_base_url="http://x/v1/").compat_base_url == (
        "http://x/v1"
    )
    assert "sk-" not in repr(DashScopeClient(BASE, KEY, http))
