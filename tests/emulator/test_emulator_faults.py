"""Injected faults, authentication, queueing and expiry, over real HTTP (no model needed)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest
from emulator_support import (
    HTTP,
    FakeClock,
    listed,
    submit,
    wait_for,
)

from pipeline.emulator import EmulatorConfig
from pipeline.emulator.errors import INTERNAL_MESSAGE, THROTTLED_MESSAGE

UNREACHABLE = ["http://127.0.0.1:9/a.wav"]
MM = "/api/v1/services/aigc/multimodal-generation/generation"
MM_BODY = {
    "model": "qwen3-asr-flash",
    "parameters": {},
    "input": {"messages": [{"role": "user", "content": [{"audio": "http://x/a.wav"}]}]},
}


def test_throttling_hits_every_api_request_before_side_effects(start: Callable[..., str]) -> None:
    """throttle_rate=1: submit, query, sync and compat calls get 429 Throttling; no task exists."""
    base = start(EmulatorConfig(throttle_rate=1.0))
    r = submit(base, "fun-asr", UNREACHABLE)
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (
        429,
        "Throttling",
        THROTTLED_MESSAGE,
    )
    assert httpx.get(f"{base}/api/v1/tasks/x").status_code == 429
    assert httpx.post(base + MM, json=MM_BODY).status_code == 429
    client = openai.OpenAI(api_key="k", base_url=f"{base}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="qwen3-asr-flash", messages=[])
    assert listed(base) == []


def test_server_errors_hit_api_requests_before_side_effects(start: Callable[..., str]) -> None:
    """error_rate=1: submit answers 500 InternalError and creates no task, so a retry is safe."""
    base = start(EmulatorConfig(error_rate=1.0))
    r = submit(base, "fun-asr", UNREACHABLE)
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (
        500,
        "InternalError",
        INTERNAL_MESSAGE,
    )
    assert listed(base) == []
    httpx.post(f"{base}/_emulator/config", json={"error_rate": 0}).raise_for_status()
    assert submit(base, "fun-asr", UNREACHABLE).status_code == 200
    assert len(listed(base)) == 1


def test_fail_rate_ends_tasks_failed(start: Callable[..., str]) -> None:
    """fail_rate=1: the task runs for the latency and ends FAILED with InternalError."""
    base = start(EmulatorConfig(fail_rate=1.0, latency_s=0.1))
    tid = submit(base, "qwen3-asr-flash-filetrans", UNREACHABLE).json()["output"]["task_id"]
    out = wait_for(base, tid)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError")
    assert listed(base)[0]["fate"] == "fail"


def test_lost_tasks_later_answer_unknown(start: Callable[..., str]) -> None:
    """lost_rate=1: the task is seen RUNNING, then answers UNKNOWN for good."""
    clock = FakeClock()
    base = start(EmulatorConfig(lost_rate=1.0, latency_s=5), clock=clock)
    tid = submit(base, "fun-asr", UNREACHABLE).json()["output"]["task_id"]
    assert wait_for(base, tid, {"RUNNING"})["output"]["task_status"] == "RUNNING"
    clock.advance(5)
    assert wait_for(base, tid)["output"] == {"task_id": tid, "task_status": "UNKNOWN"}
    assert [t["status"] for t in listed(base)] == ["UNKNOWN"]


def test_stuck_tasks_run_until_they_expire(start: Callable[..., str]) -> None:
    """stuck_rate=1: RUNNING a second before the ttl runs out, UNKNOWN after it."""
    clock = FakeClock()
    base = start(EmulatorConfig(stuck_rate=1.0, latency_s=1, task_ttl_s=3600), clock=clock)
    tid = submit(base, "fun-asr", UNREACHABLE).json()["output"]["task_id"]
    clock.advance(3599)
    assert wait_for(base, tid, {"UNKNOWN"}, timeout_s=0.5)["output"]["task_status"] == "RUNNING"
    clock.advance(1)
    assert wait_for(base, tid)["output"]["task_status"] == "UNKNOWN"


def _pattern(base: str, n: int = 40) -> list[int]:
    return [HTTP.get(f"{base}/api/v1/tasks/x").status_code for _ in range(n)]


def test_faults_are_reproducible_by_seed(start: Callable[..., str]) -> None:
    """Two emulators with one seed throttle alike; a reset replays it; another seed differs."""
    config = EmulatorConfig(seed=42, throttle_rate=0.5)
    first, second = start(config), start(config)
    pattern = _pattern(first)
    assert set(pattern) == {200, 429}
    assert _pattern(second) == pattern
    httpx.post(f"{first}/_emulator/reset").raise_for_status()
    assert _pattern(first) == pattern
    assert _pattern(start(EmulatorConfig(seed=43, throttle_rate=0.5))) != pattern


def test_runtime_config_changes_faults(start: Callable[..., str]) -> None:
    """POST /_emulator/config switches throttling on and off and refuses unknown fields."""
    base = start()
    assert (
        httpx.post(f"{base}/_emulator/config", json={"throttle_rate": 1}).json()["throttle_rate"]
        == 1.0
    )
    assert httpx.get(f"{base}/api/v1/tasks/x").status_code == 429
    httpx.post(f"{base}/_emulator/config", json={"throttle_rate": 0}).raise_for_status()
    assert httpx.get(f"{base}/api/v1/tasks/x").status_code == 200
    bad = httpx.post(f"{base}/_emulator/config", json={"max_concurrency": 3})
    assert bad.status_code == 400 and "max_concurrency" in bad.json()["error"]
    assert httpx.post(f"{base}/_emulator/config", content=b"{nope").status_code == 400


def test_auth_native_and_compat(start: Callable[..., str], point_sdk: Callable[..., None]) -> None:
    """With --api-key, a missing or wrong key is 401 in both dialects; the right one passes."""
    base = start(EmulatorConfig(api_key="sk-right"))
    r = submit(base, "fun-asr", UNREACHABLE)
    assert (r.status_code, r.json()["code"]) == (401, "InvalidApiKey")
    wrong = httpx.get(f"{base}/api/v1/tasks/x", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    right = httpx.get(f"{base}/api/v1/tasks/x", headers={"Authorization": "Bearer sk-right"})
    assert right.status_code == 200
    from dashscope.audio.asr import Transcription

    point_sdk(base, "sk-wrong")
    sdk = Transcription.async_call(model="fun-asr", file_urls=UNREACHABLE)
    assert (sdk.status_code, sdk.code) == (401, "InvalidApiKey")
    client = openai.OpenAI(api_key="sk-wrong", base_url=f"{base}/compatible-mode/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="qwen3-asr-flash", messages=[])
    assert err.value.code == "invalid_api_key"
    assert httpx.get(f"{base}/_emulator/tasks").status_code == 401  # admin routes too
    assert listed(base, key="sk-right") == []


def test_max_concurrency_queues_fifo(start: Callable[..., str]) -> None:
    """With two slots, five tasks run two at a time in submission order while the rest wait."""
    clock = FakeClock()
    base = start(EmulatorConfig(max_concurrency=2, latency_s=10), clock=clock)
    ids = [submit(base, "fun-asr", UNREACHABLE).json()["output"]["task_id"] for _ in range(5)]

    def statuses() -> list[str]:
        by_id = {t["task_id"]: t["status"] for t in listed(base)}
        return [by_id[i] for i in ids]

    assert statuses() == ["RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING"]
    wait_for(base, ids[0], {"PENDING", "RUNNING", "FAILED"})
    for expected in (
        ["FAILED", "FAILED", "RUNNING", "RUNNING", "PENDING"],
        ["FAILED"] * 4 + ["RUNNING"],
        ["FAILED"] * 5,
    ):
        clock.advance(10)
        for tid, status in zip(ids, expected, strict=True):
            if status == "FAILED":  # the download failure has to come back first
                wait_for(base, tid, {"FAILED"}, timeout_s=10)
        assert statuses() == expected


def test_finished_tasks_expire_with_the_ttl(start: Callable[..., str]) -> None:
    """After task_ttl_s a finished task answers UNKNOWN but stays in /_emulator/tasks."""
    clock = FakeClock()
    base = start(EmulatorConfig(latency_s=1), clock=clock)
    tid = submit(base, "fun-asr", UNREACHABLE).json()["output"]["task_id"]
    clock.advance(1)
    assert wait_for(base, tid, timeout_s=10)["output"]["task_status"] == "FAILED"
    clock.advance(86_399)
    assert wait_for(base, tid)["output"]["task_status"] == "FAILED"
    clock.advance(1)
    assert wait_for(base, tid)["output"]["task_status"] == "UNKNOWN"
    assert [(t["task_id"], t["status"]) for t in listed(base)] == [(tid, "UNKNOWN")]


def test_injected_faults_are_safe_to_retry(start: Callable[..., str]) -> None:
    """The 2.0 SDK client retries injected 429/500 on submit, and no task is ever duplicated."""
    import warnings

    import dashscope

    base = start(EmulatorConfig(seed=6, throttle_rate=0.35, error_rate=0.15, latency_s=0.05))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "2.0 audio API is a preview"
        client = dashscope.Client(api_key="sk", base_url=f"{base}/api/v1", max_retries=5)
        jobs = [
            client.audio.asr.jobs.create(model="fun-asr", file_urls=UNREACHABLE) for _ in range(4)
        ]
    stats = HTTP.get(f"{base}/_emulator/stats").json()
    assert stats["requests"] == 7  # seed 6 faults requests 0, 2 and 5: three retries
    assert sorted(t["task_id"] for t in listed(base)) == sorted(j.task_id for j in jobs)
