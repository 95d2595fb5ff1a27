"""The emulator's test hooks the crash tests rely on: answers held back on the wire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from dist_support import HTTP

SUBMIT = "/api/v1/services/audio/asr/transcription"


@pytest.fixture
def em(emulator: str) -> Iterator[str]:
    """The session's emulator, reset before and after."""
    HTTP.post(f"{emulator}/_emulator/reset").raise_for_status()
    yield emulator
    HTTP.post(
        f"{emulator}/_emulator/config", json={"submit_delay_s": 0, "result_delay_s": 0}
    ).raise_for_status()
    HTTP.post(f"{emulator}/_emulator/reset").raise_for_status()


def test_submit_delay_answers_after_the_task_exists(em: str) -> None:
    """With submit_delay_s the task is listed while its submit answer is still held back."""
    assert (
        HTTP.post(f"{em}/_emulator/config", json={"submit_delay_s": 1.5}).json()["submit_delay_s"]
        == 1.5
    )
    answer: dict[str, object] = {}

    def send() -> None:
        r = httpx.post(
            em + SUBMIT,
            headers={"X-DashScope-Async": "enable"},
            timeout=30,
            json={"model": "fun-asr", "input": {"file_urls": ["http://x/a.wav"]}},
        )
        answer["body"] = r.json()
        answer["at"] = time.monotonic()

    t0 = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    deadline = t0 + 5
    while not HTTP.get(f"{em}/_emulator/tasks").json() and time.monotonic() < deadline:
        time.sleep(0.02)
    listed = HTTP.get(f"{em}/_emulator/tasks").json()
    assert len(listed) == 1 and "body" not in answer  # created, not yet answered
    sender.join(10)
    assert float(answer["at"]) - t0 >= 1.5  # type: ignore[arg-type]
    assert answer["body"]["output"]["task_id"] == listed[0]["task_id"]  # type: ignore[index]


def test_delays_are_runtime_settings_and_validated(em: str) -> None:
    """Both delays are changed through POST /_emulator/config; negative ones are refused."""
    body = HTTP.post(
        f"{em}/_emulator/config", json={"submit_delay_s": 0.5, "result_delay_s": 2}
    ).json()
    assert (body["submit_delay_s"], body["result_delay_s"]) == (0.5, 2.0)
    bad = HTTP.post(f"{em}/_emulator/config", json={"result_delay_s": -1})
    assert bad.status_code == 400 and "result_delay_s" in bad.json()["error"]
