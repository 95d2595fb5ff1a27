"""The client against the DashScope emulator over real HTTP (fake engine, real ffmpeg)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from pipeline.asr.base import AudioClip
from pipeline.asr.dashscope import (
    DashScopeClient,
    DashScopeClipEngine,
    Done,
    Failed,
    PollLimits,
    TaskStatus,
    Wait,
    decide,
    file_outcomes,
    filetrans_parameters,
    funasr_parameters,
    new_http_client,
    transcripts_from_result,
)
from pipeline.asr.dashscope.engine import wav_data_uri
from pipeline.emulator import EmulatorConfig, running_emulator
from pipeline.errors import (
    ConfigError,
    FailureCode,
    ProviderBusy,
    ProviderRejected,
    ProviderUnavailable,
)
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Sentence, Transcript, Word

pytestmark = pytest.mark.ffmpeg  # the emulator probes and normalizes what it is sent

KEY = "emulator-key"
TEXT = "Hello there. General Kenobi."
POLL = PollLimits(first_s=0.05, max_s=0.2, give_up_after_s=30.0)


class FakeEngine:
    """A ClipEngine that 'hears' the same two sentences in any clip."""

    name = "fake"
    max_clip_s = 300.0

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        d = round(clip.duration_s * 1000)
        words = (
            Word(0, d // 4, "Hello"),
            Word(d // 4, d // 2, "there", "."),
            Word(d // 2, 3 * d // 4, "General"),
            Word(3 * d // 4, d, "Kenobi", "."),
        )
        return Transcript(
            (
                Sentence(0, d // 2, "Hello there.", words[:2]),
                Sentence(d // 2, d, "General Kenobi.", words[2:]),
            ),
            language="en",
        )


def _clip(seconds: float = 2.0) -> AudioClip:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return AudioClip((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16))


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """One emulator for the module: key required, tasks finish after 50 ms."""
    with running_emulator(EmulatorConfig(api_key=KEY, latency_s=0.05), engine=FakeEngine()) as url:
        yield url


@pytest.fixture
def live(emulator_url: str) -> Iterator[DashScopeClient]:
    """A client on the emulator with the default timeouts."""
    with new_http_client() as http:
        yield DashScopeClient(f"{emulator_url}/api/v1", KEY, http)


def _wait(client: DashScopeClient, task_id: str) -> tuple[TaskStatus, Done | Failed]:
    """Poll by the pure decision until it stops waiting (a test-only loop)."""
    started = time.monotonic()
    for polls in range(200):
        status = client.query_task(task_id)
        decision = decide(status, polls, time.monotonic() - started, POLL)
        if not isinstance(decision, Wait):
            return status, decision
        time.sleep(decision.seconds)
    raise AssertionError("the emulator never finished the task")


@pytest.mark.parametrize(
    ("call", "stream"),
    [
        ("native", False),
        ("native", True),
        ("compat", False),
        ("compat", True),
        ("omni", True),
    ],
)
def test_sync_recognition(live: DashScopeClient, call: str, stream: bool) -> None:
    """Every sync path returns the engine's text and a detected language."""
    uri = wav_data_uri(_clip())
    if call == "native":
        result = live.recognize("qwen3-asr-flash", uri, language="en", stream=stream)
    else:
        model = "qwen3-omni-flash" if call == "omni" else "qwen3-asr-flash"
        result = live.chat_transcribe(model, uri, language="en", stream=stream)
    assert (result.text, result.language) == (TEXT, "en")
    assert result.request_id


def test_clip_engine_end_to_end(live: DashScopeClient) -> None:
    """The ClipEngine turns the emulator's text into timed sentences over the clip."""
    t = DashScopeClipEngine(live, "qwen3-asr-flash").transcribe(_clip(2.0), AsrOptions())
    assert [(s.begin_ms, s.end_ms, s.text) for s in t.sentences] == [
        (0, 880, "Hello there."),
        (880, 2000, "General Kenobi."),
    ]
    assert t.language == "en"


def test_upload_submit_poll_fetch_funasr(live: DashScopeClient) -> None:
    """Upload, a Fun-ASR task on the oss:// URL, polling, and the result document."""
    oss = live.upload_temporary(_clip().wav_bytes(), "hello.wav", "fun-asr")
    assert oss.startswith("oss://") and oss.endswith("/hello.wav")
    submitted = live.submit_transcription("fun-asr", [oss], funasr_parameters(AsrOptions()))
    status, decision = _wait(live, submitted.task_id)
    assert isinstance(decision, Done)
    outcome = file_outcomes(status, [oss])[oss]
    assert outcome.succeeded
    [t] = transcripts_from_result(live.fetch_result(outcome.transcription_url or ""))
    assert t.text == TEXT
    assert [w.text for s in t.sentences for w in s.words] == ["Hello", "there", "General", "Kenobi"]


def test_filetrans_task(live: DashScopeClient) -> None:
    """A filetrans task's single result is named after the submitted URL and parses."""
    oss = live.upload_temporary(_clip().wav_bytes(), "ft.wav", "qwen3-asr-flash-filetrans")
    params = filetrans_parameters(AsrOptions(language="en"))
    submitted = live.submit_transcription("qwen3-asr-flash-filetrans", [oss], params)
    status, decision = _wait(live, submitted.task_id)
    assert isinstance(decision, Done)
    outcome = file_outcomes(status, [oss])[oss]
    [t] = transcripts_from_result(live.fetch_result(outcome.transcription_url or ""))
    assert (t.text, t.language) == (TEXT, "en")


def test_unknown_task_is_task_lost(live: DashScopeClient) -> None:
    """A task id the emulator never saw is UNKNOWN, which the decision calls task_lost."""
    status = live.query_task("00000000-0000-0000-0000-000000000000")
    decision = decide(status, 0, 0.0, POLL)
    assert isinstance(decision, Failed) and decision.code is FailureCode.TASK_LOST


def test_wrong_key_is_provider_auth(emulator_url: str) -> None:
    """A wrong key is a 401 InvalidApiKey, raised as ConfigError / provider_auth."""
    with new_http_client() as http:
        client = DashScopeClient(f"{emulator_url}/api/v1", "wrong", http)
        with pytest.raises(ConfigError) as err:
            client.query_task("t")
    assert err.value.code is FailureCode.PROVIDER_AUTH
    assert err.value.detail["provider_code"] == "InvalidApiKey"


@pytest.mark.parametrize("stream", [False, True])
def test_undecodable_audio_is_rejected(live: DashScopeClient, stream: bool) -> None:
    """Garbage audio is a 400 InvalidParameter, as JSON or as an SSE error body."""
    with pytest.raises(ProviderRejected) as err:
        live.recognize("qwen3-asr-flash", "data:audio/wav;base64,AAAA", stream=stream)
    assert err.value.detail["provider_code"] == "InvalidParameter"
    assert err.value.detail["request_id"]


def test_cancel_of_a_finished_task_is_refused(live: DashScopeClient) -> None:
    """Only PENDING tasks cancel; the refusal is a ProviderRejected with the service's code."""
    with pytest.raises(ProviderRejected) as err:
        live.cancel_task("00000000-0000-0000-0000-000000000000")
    assert err.value.detail["provider_code"] == "UnsupportedOperation"


@pytest.mark.parametrize(
    ("rates", "kind", "code"),
    [
        ({"throttle_rate": 1.0}, ProviderBusy, FailureCode.PROVIDER_THROTTLED),
        ({"error_rate": 1.0}, ProviderUnavailable, FailureCode.PROVIDER_ERROR),
    ],
)
def test_injected_request_faults(rates: dict, kind: type, code: FailureCode) -> None:
    """The emulator's injected 429 and 500 land on the transient branches."""
    with (
        running_emulator(EmulatorConfig(**rates), engine=FakeEngine()) as url,
        httpx.Client() as http,
    ):
        client = DashScopeClient(f"{url}/api/v1", KEY, http)
        with pytest.raises(kind) as err:
            client.submit_transcription("fun-asr", ["https://a.example/a.wav"], {})
    assert err.value.code is code


def test_failed_task_is_provider_failed() -> None:
    """A task the emulator fails is decided as provider_failed with the file's code."""
    with (
        running_emulator(EmulatorConfig(fail_rate=1.0, latency_s=0.05), engine=FakeEngine()) as url,
        new_http_client() as http,
    ):
        client = DashScopeClient(f"{url}/api/v1", KEY, http)
        oss = client.upload_temporary(_clip().wav_bytes(), "f.wav", "fun-asr")
        status, decision = _wait(client, client.submit_transcription("fun-asr", [oss], {}).task_id)
    assert isinstance(decision, Failed) and decision.code is FailureCode.PROVIDER_FAILED
    assert decision.detail["provider_code"] == status.code
    assert not file_outcomes(status, [oss])[oss].succeeded
