"""Pure decisions: fault draws, settings, and request validation."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.emulator.catalog import Family
from pipeline.emulator.config import ConfigInvalid, EmulatorConfig
from pipeline.emulator.errors import MODEL_NOT_EXIST, STREAM_ONLY, ApiError
from pipeline.emulator.faults import Fate, RequestFault, request_fault, task_fate, unit
from pipeline.emulator.parse import parse_chat, parse_multimodal, parse_submit


def test_draws_are_fixed_by_seed_stream_and_index() -> None:
    """The same (seed, stream, n) always gives the same number in [0, 1); another seed does not."""
    a = [unit(7, "request", n) for n in range(200)]
    assert a == [unit(7, "request", n) for n in range(200)]
    assert a != [unit(8, "request", n) for n in range(200)]
    assert all(0.0 <= u < 1.0 for u in a)


def test_request_fault_rates_are_honoured() -> None:
    """Over 10,000 requests, throttling and errors occur at about their configured rates."""
    cfg = EmulatorConfig(seed=3, throttle_rate=0.2, error_rate=0.1)
    faults = [request_fault(cfg, n) for n in range(10_000)]
    assert faults.count(RequestFault.THROTTLE) / 10_000 == pytest.approx(0.2, abs=0.02)
    assert faults.count(RequestFault.ERROR) / 10_000 == pytest.approx(0.1, abs=0.02)


def test_task_fates_partition_the_draw() -> None:
    """Fail, lost and stuck rates each claim their share; zero rates never fire."""
    cfg = EmulatorConfig(seed=1, fail_rate=0.1, lost_rate=0.2, stuck_rate=0.3)
    fates = [task_fate(cfg, n) for n in range(10_000)]
    for fate, rate in ((Fate.FAIL, 0.1), (Fate.LOST, 0.2), (Fate.STUCK, 0.3), (Fate.OK, 0.4)):
        assert fates.count(fate) / 10_000 == pytest.approx(rate, abs=0.02)
    assert {task_fate(EmulatorConfig(seed=1), n) for n in range(1000)} == {Fate.OK}


@pytest.mark.parametrize(
    "bad",
    [
        {"fail_rate": 1.5},
        {"throttle_rate": -0.1},
        {"fail_rate": 0.6, "stuck_rate": 0.6},
        {"max_concurrency": 0},
        {"latency_s": -1},
        {"task_ttl_s": 0},
    ],
)
def test_impossible_settings_are_refused(bad: dict[str, Any]) -> None:
    """Rates outside [0, 1], over-full fate shares and non-positive sizes raise ConfigInvalid."""
    with pytest.raises(ConfigInvalid):
        EmulatorConfig(**bad)


def test_runtime_patch_changes_only_rates_and_latency() -> None:
    """with_changes applies rate/latency patches, validates them and refuses other fields."""
    cfg = EmulatorConfig().with_changes({"throttle_rate": 1, "latency_s": 0.5})
    assert (cfg.throttle_rate, cfg.latency_s) == (1.0, 0.5)
    with pytest.raises(ConfigInvalid, match="max_concurrency"):
        cfg.with_changes({"max_concurrency": 9})
    with pytest.raises(ConfigInvalid):
        cfg.with_changes({"fail_rate": 2})
    assert EmulatorConfig(api_key="sk-secret").public()["api_key"] == "***"


def _submit(body: dict[str, Any], *, oss: bool = False, max_files: int = 100) -> Any:
    return parse_submit(body, oss_resolve=oss, max_files=max_files)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"model": "whisper-9", "input": {"file_urls": ["http://a/x.wav"]}},
            "InvalidParameter",
            MODEL_NOT_EXIST,
        ),
        ({"input": {"file_urls": ["http://a/x.wav"]}}, "BadRequest.EmptyModel", "model"),
        ({"model": "fun-asr"}, "BadRequest.EmptyInput", "input"),
        ({"model": "fun-asr", "input": {"file_urls": []}}, "InvalidParameter", "file_urls"),
        (
            {"model": "fun-asr", "input": {"file_urls": ["http://a/x.wav"] * 3}},
            "InvalidParameter",
            "at most 2",
        ),
        (
            {
                "model": "qwen3-asr-flash-filetrans",
                "input": {"file_url": "http://a/x.wav"},
                "parameters": {"diarization_enabled": True},
            },
            "InvalidParameter",
            "diarization",
        ),
        (
            {"model": "fun-asr", "input": {"file_urls": ["oss://dir/x.wav"]}},
            "InvalidParameter",
            "X-DashScope-OssResourceResolve",
        ),
        (
            {
                "model": "fun-asr",
                "input": {"file_urls": ["http://a/x.wav"]},
                "parameters": {"channel_id": "0"},
            },
            "InvalidParameter",
            "channel_id",
        ),
    ],
)
def test_bad_submissions_are_refused_synchronously(
    body: dict[str, Any], code: str, message: str
) -> None:
    """Each malformed E1 body gets the 400 code and message the service would give."""
    with pytest.raises(ApiError) as err:
        _submit(body, max_files=2)
    assert (err.value.status, err.value.code) == (400, code)
    assert message in err.value.message


def test_submissions_carry_their_options() -> None:
    """Language hints, diarization, channels and enable_words reach the task's options."""
    fun = _submit(
        {
            "model": "fun-asr",
            "input": {"file_urls": ["oss://d/a.wav"]},
            "parameters": {
                "language_hints": ["en", "zh"],
                "diarization_enabled": True,
                "channel_id": [0, 1],
                "vocabulary_id": "ignored",
            },
        },
        oss=True,
    )
    assert (fun.family, fun.file_urls) == (Family.FILE_URLS, ("oss://d/a.wav",))
    assert (fun.options.language, fun.options.diarization, fun.options.channels) == (
        "en",
        True,
        (0, 1),
    )
    qwen = _submit(
        {
            "model": "qwen3-asr-flash-filetrans",
            "input": {"file_url": "http://a/b"},
            "parameters": {"language": "en", "enable_words": True},
        }
    )
    assert (qwen.family, qwen.options.enable_words, qwen.options.language) == (
        Family.FILETRANS,
        True,
        "en",
    )
    assert not _submit(
        {"model": "qwen3-asr-flash-filetrans", "input": {"file_url": "http://a/b"}}
    ).options.enable_words


def test_multimodal_request_finds_audio_context_and_options() -> None:
    """E4 parsing takes the user's audio element, the system text and asr_options.language."""
    req = parse_multimodal(
        {
            "model": "qwen3-asr-flash",
            "input": {
                "messages": [
                    {"role": "system", "content": [{"text": "Harvard sentences"}]},
                    {"role": "user", "content": [{"audio": "oss://d/a.wav"}]},
                ]
            },
            "parameters": {"asr_options": {"language": "en"}, "incremental_output": True},
        },
        stream=True,
        oss_resolve=True,
    )
    assert (req.audio, req.options.context, req.options.language) == (
        "oss://d/a.wav",
        "Harvard sentences",
        "en",
    )
    assert req.stream and req.incremental


def test_chat_request_rules() -> None:
    """E5: omni needs stream=true, unknown models are 404 model_not_found, audio is required."""
    audio = [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": "http://a/x.wav", "format": "wav"}}
            ],
        }
    ]
    with pytest.raises(ApiError) as err:
        parse_chat({"model": "qwen3-omni-flash", "messages": audio}, oss_resolve=False)
    assert (err.value.status, err.value.message) == (400, STREAM_ONLY)
    with pytest.raises(ApiError) as err:
        parse_chat({"model": "gpt-9", "messages": audio}, oss_resolve=False)
    assert err.value.compat_body("r")["error"]["code"] == "model_not_found"
    with pytest.raises(ApiError):
        parse_chat(
            {"model": "qwen3-asr-flash", "messages": [{"role": "user", "content": []}]},
            oss_resolve=False,
        )
    req = parse_chat(
        {
            "model": "qwen3-asr-flash",
            "messages": audio,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        oss_resolve=False,
    )
    assert (req.audio, req.include_usage) == ("http://a/x.wav", True)
