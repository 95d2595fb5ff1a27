"""Parameter building: AsrOptions to DashScope's ``parameters``, field by field."""

from __future__ import annotations

import pytest

from pipeline.asr.dashscope import filetrans_parameters, funasr_parameters, submit_parameters
from pipeline.errors import FailureCode, PermanentError
from pipeline.models import AsrOptions


def test_funasr_defaults_send_nothing() -> None:
    """Default options give empty parameters: the service's own defaults apply."""
    assert funasr_parameters(AsrOptions()) == {}


def test_funasr_maps_every_field() -> None:
    """Language, vocabulary, diarization, speaker count and channels map to their keys."""
    options = AsrOptions(language="zh", vocabulary_id="vocab-1", diarization=True, speaker_count=3)
    assert funasr_parameters(options, channels=[0, 1]) == {
        "language_hints": ["zh"],
        "vocabulary_id": "vocab-1",
        "diarization_enabled": True,
        "speaker_count": 3,
        "channel_id": [0, 1],
    }


def test_funasr_speaker_count_without_diarization_is_not_sent() -> None:
    """speaker_count is only a hint for diarization, so alone it is dropped."""
    assert funasr_parameters(AsrOptions(speaker_count=2)) == {}


@pytest.mark.parametrize("count", [1, 101])
def test_funasr_speaker_count_out_of_range(count: int) -> None:
    """speaker_count outside 2..100 is refused with unsupported_option."""
    with pytest.raises(PermanentError) as err:
        funasr_parameters(AsrOptions(diarization=True, speaker_count=count))
    assert err.value.code is FailureCode.UNSUPPORTED_OPTION


def test_extra_options_pass_through_and_typed_fields_win() -> None:
    """Manifest extras reach ``parameters``; a typed field overrides a clashing extra."""
    options = AsrOptions(
        language="en", extra=(("disfluency_removal_enabled", True), ("language_hints", ["ja"]))
    )
    assert funasr_parameters(options) == {
        "disfluency_removal_enabled": True,
        "language_hints": ["en"],
    }


def test_filetrans_maps_language_itn_words_channels() -> None:
    """Filetrans takes one ``language`` and explicit enable_itn / enable_words flags."""
    options = AsrOptions(language="en", itn=True, words=False)
    assert filetrans_parameters(options, channels=[1]) == {
        "language": "en",
        "enable_itn": True,
        "enable_words": False,
        "channel_id": [1],
    }


@pytest.mark.parametrize(
    "options",
    [AsrOptions(diarization=True), AsrOptions(vocabulary_id="vocab-1")],
    ids=["diarization", "vocabulary"],
)
def test_filetrans_refuses_funasr_only_features(options: AsrOptions) -> None:
    """Diarization or hotwords on filetrans fail clearly instead of being dropped."""
    with pytest.raises(PermanentError) as err:
        filetrans_parameters(options, model="qwen3-asr-flash-filetrans")
    assert err.value.code is FailureCode.UNSUPPORTED_OPTION
    assert "qwen3-asr-flash-filetrans" in err.value.message
    assert "fun-asr" in err.value.message


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("fun-asr", {"diarization_enabled": True}),
        ("paraformer-v2", {"diarization_enabled": True}),
    ],
)
def test_submit_parameters_dispatches_by_family(model: str, expected: dict) -> None:
    """The Fun-ASR/Paraformer family accepts diarization."""
    assert submit_parameters(model, AsrOptions(diarization=True)) == expected


def test_submit_parameters_refuses_diarization_on_filetrans() -> None:
    """Diarization on filetrans raises unsupported_option through the dispatcher too."""
    with pytest.raises(PermanentError) as err:
        submit_parameters("qwen3-asr-flash-filetrans", AsrOptions(diarization=True))
    assert err.value.code is FailureCode.UNSUPPORTED_OPTION


def test_submit_parameters_refuses_a_sync_model() -> None:
    """A sync model has no async parameters."""
    with pytest.raises(PermanentError) as err:
        submit_parameters("qwen3-asr-flash", AsrOptions())
    assert err.value.code is FailureCode.CONFIG_INVALID
