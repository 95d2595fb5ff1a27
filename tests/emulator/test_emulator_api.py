"""The emulator's HTTP API without the model: validation, task lifecycle, uploads, errors."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from emulator_support import (
    SUBMIT,
    FakeClock,
    listed,
    submit,
    wait_for,
)

from pipeline.emulator import EmulatorConfig
from pipeline.emulator.errors import ASYNC_ONLY_MESSAGE, MODEL_NOT_EXIST


def test_submit_requires_async_header(start: Callable[..., str]) -> None:
    """E1 without X-DashScope-Async is refused 403 AccessDenied and creates no task."""
    base = start()
    r = httpx.post(
        base + SUBMIT,
        json={"model": "fun-asr", "input": {"file_urls": ["http://x"]}, "parameters": {}},
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/json"
    assert (r.json()["code"], r.json()["message"]) == ("AccessDenied", ASYNC_ONLY_MESSAGE)
    assert listed(base) == []


def test_unknown_model_and_too_many_files_are_400(start: Callable[..., str]) -> None:
    """An unknown model and 101 URLs are refused with InvalidParameter and leave no task."""
    base = start()
    r = submit(base, "fun-asr-9000", ["http://x/a.wav"])
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (
        400,
        "InvalidParameter",
        MODEL_NOT_EXIST,
    )
    r = submit(base, "fun-asr", [f"http://x/{i}.wav" for i in range(101)])
    assert r.status_code == 400 and "at most 100" in r.json()["message"]
    assert uuid.UUID(r.json()["request_id"])
    assert listed(base) == []


def test_oss_urls_need_the_resolve_header(start: Callable[..., str]) -> None:
    """oss:// file URLs are refused without X-DashScope-OssResourceResolve, accepted with it."""
    base = start()
    assert submit(base, "fun-asr", ["oss://nowhere/a.wav"]).status_code == 400
    ok = submit(
        base,
        "fun-asr",
        ["oss://nowhere/a.wav"],
        headers={"X-DashScope-OssResourceResolve": "enable"},
    )
    assert ok.status_code == 200
    body = wait_for(base, ok.json()["output"]["task_id"])
    assert body["output"]["results"][0]["code"] == "InvalidFile.DownloadFailed"


def test_unknown_task_is_200_unknown(start: Callable[..., str]) -> None:
    """Querying a task id that never existed answers 200 UNKNOWN by GET and by POST."""
    base = start()
    tid = str(uuid.uuid4())
    for r in (httpx.get(f"{base}/api/v1/tasks/{tid}"), httpx.post(f"{base}/api/v1/tasks/{tid}")):
        assert r.status_code == 200
        assert r.json()["output"] == {"task_id": tid, "task_status": "UNKNOWN"}
        assert r.json()["request_id"]


def test_all_files_failing_fails_the_task(start: Callable[..., str], media_url: str) -> None:
    """Two unreachable files: FAILED, top-level DownloadFailed, per-file results, metrics 2/0/2."""
    base = start()
    urls = [f"{media_url}/missing-1.wav", "http://127.0.0.1:9/refused.wav"]
    r = submit(base, "fun-asr", urls)
    assert r.json()["output"]["task_status"] == "PENDING"
    out = wait_for(base, r.json()["output"]["task_id"])["output"]
    assert out["task_status"] == "FAILED"
    assert (out["code"], out["message"]) == (
        "InvalidFile.DownloadFailed",
        "The audio file cannot be downloaded.",
    )
    assert [x["file_url"] for x in out["results"]] == urls
    assert out["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 0, "FAILED": 2}


def test_cancel_only_while_pending(start: Callable[..., str]) -> None:
    """With one slot the second task is PENDING and can be cancelled; the RUNNING one cannot."""
    clock = FakeClock()
    base = start(EmulatorConfig(latency_s=10, max_concurrency=1), clock=clock)
    first, second = (
        submit(base, "fun-asr", ["http://127.0.0.1:9/a.wav"]).json()["output"]["task_id"]
        for _ in range(2)
    )
    r = httpx.post(f"{base}/api/v1/tasks/{first}/cancel")
    assert (r.status_code, r.json()["code"]) == (400, "UnsupportedOperation")
    r = httpx.post(f"{base}/api/v1/tasks/{second}/cancel")
    assert r.status_code == 200 and r.json()["request_id"]
    clock.advance(30)
    assert wait_for(base, second)["output"]["task_status"] == "CANCELED"
    assert [t["status"] for t in listed(base)] == ["FAILED", "CANCELED"]


def test_list_pages_newest_first(start: Callable[..., str]) -> None:
    """GET /api/v1/tasks pages through live tasks with page_no, page_size and total."""
    clock = FakeClock()
    base = start(EmulatorConfig(latency_s=60, max_concurrency=1), clock=clock)
    ids = []
    for _ in range(5):
        ids.append(
            submit(base, "fun-asr", ["http://127.0.0.1:9/a.wav"]).json()["output"]["task_id"]
        )
        clock.advance(1)
    page = httpx.get(f"{base}/api/v1/tasks", params={"page_no": 1, "page_size": 2}).json()
    assert (page["total"], page["page_no"], page["page_size"]) == (5, 1, 2)
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2]
    pending = httpx.get(f"{base}/api/v1/tasks", params={"status": "PENDING"}).json()
    assert pending["total"] == 4


def test_upload_flow_stores_objects(start: Callable[..., str]) -> None:
    """getPolicy's ten keys point at the emulator, whose PostObject accepts only signed forms."""
    base = start()
    r = httpx.get(
        f"{base}/api/v1/uploads", params={"action": "getPolicy", "model": "qwen3-asr-flash"}
    )
    data = r.json()["data"]
    assert len(data) == 10 and data["upload_host"].startswith(base)
    form = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": data["upload_dir"] + "/a.bin",
        "x-oss-object-acl": "private",
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
        "x-oss-content-type": "audio/wav",
    }
    files = {"file": ("a.bin", b"bytes", "application/octet-stream")}
    assert httpx.post(data["upload_host"], data=form, files=files).status_code == 200
    assert httpx.post(data["upload_host"], data=form, files=files).status_code == 409
    forged = httpx.post(data["upload_host"], data={**form, "Signature": "AAAA"}, files=files)
    assert forged.status_code == 403 and b"SignatureDoesNotMatch" in forged.content


def test_sync_limits_refuse_big_data_uris(start: Callable[..., str]) -> None:
    """A data URI over 10 MB (after encoding) is refused 400 before anything is decoded."""
    base = start()
    big = "data:audio/wav;base64," + base64.b64encode(b"\0" * (8 * 1024 * 1024)).decode()
    r = httpx.post(
        f"{base}/api/v1/services/aigc/multimodal-generation/generation",
        json={
            "model": "qwen3-asr-flash",
            "input": {"messages": [{"role": "user", "content": [{"audio": big}]}]},
            "parameters": {},
        },
        timeout=60,
    )
    assert (r.status_code, r.json()["code"]) == (400, "InvalidParameter")
    assert "10 MB" in r.json()["message"]


def test_compat_errors_are_openai_shaped(start: Callable[..., str]) -> None:
    """Compatible mode answers unknown models 404 model_not_found in an OpenAI error body."""
    base = start()
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="gpt-nothing",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "http://x/a.wav"}}],
                }
            ],
        )
    assert err.value.code == "model_not_found"


def test_unknown_routes_answer_json(start: Callable[..., str]) -> None:
    """A path the emulator does not serve is a JSON 404 with a request id."""
    base = start()
    r = httpx.get(f"{base}/api/v1/services/nothing")
    assert r.status_code == 404 and r.json()["request_id"]
    assert r.headers["content-type"] == "application/json"


def test_stream_errors_reach_the_sdk(
    start: Callable[..., str], media_url: str, point_sdk: Callable[..., None]
) -> None:
    """A streamed call on an unreachable file yields one SDK error response (event:error)."""
    from dashscope import MultiModalConversation

    base = start()
    point_sdk(base)
    events = list(
        MultiModalConversation.call(
            model="qwen3-asr-flash",
            stream=True,
            messages=[{"role": "user", "content": [{"audio": f"{media_url}/missing.wav"}]}],
        )
    )
    assert [(e.status_code, e.code) for e in events] == [(400, "InvalidParameter")]
    assert "downloaded" in events[0].message


def test_omni_refuses_non_stream_calls(start: Callable[..., str]) -> None:
    """qwen3-omni-flash with stream=false is a 400 invalid_parameter_error with the docs' text."""
    base = start()
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="qwen3-omni-flash",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "http://x/a.wav"}}],
                }
            ],
        )
    assert err.value.code == "invalid_parameter_error"
    assert "only support stream mode" in str(err.value.message)


@pytest.mark.ffmpeg
def test_sync_calls_refuse_audio_over_five_minutes(
    start: Callable[..., str], media_url: str, make_media: Callable[..., Path]
) -> None:
    """qwen3-asr-flash refuses a 301 s file with 400, found by probing, before any decoding."""
    make_media("long.wav", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "301")
    base = start()
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="qwen3-asr-flash",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": f"{media_url}/long.wav"}}
                    ],
                }
            ],
        )
    assert "5 minutes" in str(err.value.message)
