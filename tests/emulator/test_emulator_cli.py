"""``bulkscribe emulator`` as a real subprocess: options, auth and one real transcription."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support import wer

from pipeline.emulator.server import free_port

KEY = "sk-cli-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
OPTIONS = [
    "--host",
    "--port",
    "--api-key",
    "--latency-s",
    "--max-concurrency",
    "--seed",
    "--fail-rate",
    "--throttle-rate",
    "--error-rate",
    "--lost-rate",
    "--stuck-rate",
    "--task-ttl-s",
    "--model",
    "--public-url",
]


def test_help_lists_every_option(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """``bulkscribe emulator --help`` documents every option the brief names."""
    done = run_cli("emulator", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert all(opt in done.stdout for opt in OPTIONS)


@pytest.fixture
def cli_emulator(tmp_path: Path) -> Iterator[str]:
    """The real console script serving on a free port with an API key; stopped afterwards."""
    port = free_port()
    exe = Path(sys.executable).with_name("bulkscribe")
    log = (tmp_path / "emulator.log").open("w")
    proc = subprocess.Popen(
        [
            str(exe),
            "emulator",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--latency-s",
            "0.2",
            "--max-concurrency",
            "2",
            "--seed",
            "5",
            "--public-url",
            f"http://127.0.0.1:{port}/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "emulator.log").read_text()
            try:
                if httpx.get(f"{base}/_emulator/tasks", headers=AUTH).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the emulator did not come up"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.ffmpeg
def test_cli_serves_the_sdk(
    cli_emulator: str,
    media_url: str,
    harvard_wav: Path,
    harvard_text: str,
    point_sdk: Callable[..., None],
) -> None:
    """The subprocess refuses a missing key and transcribes for the SDK that has the right one."""
    from dashscope.audio.asr import Transcription

    url = f"{media_url}/{harvard_wav.name}"
    refused = httpx.post(
        f"{cli_emulator}/api/v1/services/audio/asr/transcription",
        headers={"X-DashScope-Async": "enable"},
        json={"model": "fun-asr", "input": {"file_urls": [url]}},
    )
    assert (refused.status_code, refused.json()["code"]) == (401, "InvalidApiKey")
    point_sdk(cli_emulator, KEY)
    done = Transcription.call(model="fun-asr", file_urls=[url])
    assert done.output.task_status == "SUCCEEDED", done
    result_url = done.output.results[0]["transcription_url"]
    assert result_url.startswith(f"{cli_emulator}/results/")
    doc = httpx.get(result_url).json()  # no header needed: the result URL is presigned
    assert wer(harvard_text, doc["transcripts"][0]["text"]) < 0.35
    assert httpx.get(f"{cli_emulator}/_emulator/tasks").status_code == 401
    tasks = httpx.get(f"{cli_emulator}/_emulator/tasks", headers=AUTH).json()
    assert [(t["model"], t["file_urls"], t["status"]) for t in tasks] == [
        ("fun-asr", [url], "SUCCEEDED")
    ]
