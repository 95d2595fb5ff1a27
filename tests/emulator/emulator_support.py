"""Fixtures and helpers for the emulator tests (the fixtures reach the tests through this
directory's conftest.py)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.asr.base import AudioClip
from pipeline.emulator import EmulatorConfig, running_emulator
from pipeline.emulator.backend import TranscriptCache
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Transcript

SUBMIT = "/api/v1/services/audio/asr/transcription"
ASYNC = {"X-DashScope-Async": "enable"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"}

# One cache for every emulator the tests start: each file is transcribed once per session.
CACHE = TranscriptCache()
# One pooled client for the helpers: a fresh httpx.Client per call costs ~30 ms of TLS setup.
HTTP = httpx.Client(timeout=120.0)


class FakeClock:
    """A clock tests move by hand, so a 24 h expiry takes no time."""

    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class NoEngine:
    """An engine that must never be reached: tests using it do not transcribe anything."""

    name = "none"
    max_clip_s = 300.0

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        raise AssertionError("this test was not supposed to reach the engine")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def media_url(media_dir: Path) -> Iterator[str]:
    """A plain HTTP server for the session's media directory (garbage.wav added; else 404)."""
    (media_dir / "garbage.wav").write_bytes(b"this is not audio at all\n" * 200)
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def start() -> Iterator[Callable[..., str]]:
    """Start emulators with any settings (no engine unless given); all stop after the test."""
    with contextlib.ExitStack() as stack:

        def _start(
            config: EmulatorConfig | None = None,
            *,
            engine: Any = None,
            clock: Callable[[], float] = time.time,
        ) -> str:
            return stack.enter_context(
                running_emulator(
                    config or EmulatorConfig(latency_s=0.05),
                    engine=engine or NoEngine(),
                    clock=clock,
                    cache=CACHE,
                )
            )

        yield _start


@pytest.fixture(scope="module")
def real_emulator(tiny_engine: Any) -> Iterator[str]:
    """One emulator per module backed by the session's tiny.en model."""
    config = EmulatorConfig(latency_s=0.1, max_concurrency=8, seed=11)
    with running_emulator(config, engine=tiny_engine, cache=CACHE) as base:
        yield base


@pytest.fixture
def real(real_emulator: str) -> str:
    """The module's real emulator with no tasks and no faults."""
    HTTP.post(f"{real_emulator}/_emulator/reset").raise_for_status()
    HTTP.post(
        f"{real_emulator}/_emulator/config",
        json={
            "latency_s": 0.1,
            "fail_rate": 0,
            "throttle_rate": 0,
            "error_rate": 0,
            "lost_rate": 0,
            "stuck_rate": 0,
        },
    ).raise_for_status()
    return real_emulator


@pytest.fixture
def point_sdk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Aim the official dashscope SDK at an emulator, with a key."""
    import dashscope

    def _point(base: str, api_key: str = "sk-emulator-test") -> None:
        monkeypatch.setattr(dashscope, "base_http_api_url", f"{base}/api/v1")
        monkeypatch.setattr(dashscope, "api_key", api_key)

    return _point


def submit(
    base: str,
    model: str = "fun-asr",
    urls: list[str] | None = None,
    headers: dict[str, str] | None = None,
    **parameters: Any,
) -> httpx.Response:
    """POST one E1 submission the way the SDK does."""
    inp: dict[str, Any] = (
        {"file_urls": urls} if "filetrans" not in model else {"file_url": (urls or [""])[0]}
    )
    return HTTP.post(
        base + SUBMIT,
        json={"model": model, "input": inp, "parameters": parameters},
        headers={**ASYNC, **(headers or {})},
    )


def wait_for(
    base: str,
    task_id: str,
    statuses: set[str] = TERMINAL,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll E2 until the task reaches one of ``statuses``; returns the whole body."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = HTTP.get(f"{base}/api/v1/tasks/{task_id}", headers=headers).json()
        if body["output"]["task_status"] in statuses or time.monotonic() > deadline:
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)


def listed(base: str, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return HTTP.get(f"{base}/_emulator/tasks", headers=headers).json()  # type: ignore[no-any-return]


def stats(base: str) -> dict[str, Any]:
    return HTTP.get(f"{base}/_emulator/stats").json()  # type: ignore[no-any-return]
