"""Unit tests for pipeline.stages.normalize: the exact ffmpeg argv and the trim checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import FailureCode, MediaRejected
from pipeline.models import NormalizeSpec, ProbeResult
from pipeline.stages.normalize import check_trim, normalize_argv

SRC, DST = Path("/in/talk one.mp3"), Path("/scratch/abc/audio.wav")
HEAD = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
TAIL = ["-map", "0:a:0", "-f", "wav", "-ac", "1", "-acodec", "pcm_s16le"]
PROBE = ProbeResult("mp3", "mp3", duration_s=10.0, channels=2, sample_rate=44_100, size_bytes=1000)


def test_plain_argv() -> None:
    """No trim and no channel: first audio stream to 16 kHz mono s16 WAV, overwriting."""
    assert normalize_argv(SRC, DST, NormalizeSpec()) == [
        *HEAD,
        "-i",
        str(SRC),
        *TAIL,
        "-ar",
        "16000",
        str(DST),
    ]


def test_trim_and_channel_argv() -> None:
    """start_s/end_s become input -ss/-to, and a channel is picked with pan, not downmixed."""
    argv = normalize_argv(SRC, DST, NormalizeSpec(), start_s=1.5, end_s=4.0, channel=1)
    assert argv == [
        *HEAD,
        "-ss",
        "1.5",
        "-to",
        "4.0",
        "-i",
        str(SRC),
        *TAIL,
        "-af",
        "pan=mono|c0=c1",
        "-ar",
        "16000",
        str(DST),
    ]


def test_only_end_s_and_other_spec() -> None:
    """An end without a start gives only -to; the spec's rate and codec are used."""
    spec = NormalizeSpec(sample_rate=8000, codec="pcm_s24le")
    argv = normalize_argv(SRC, DST, spec, end_s=2.0)
    assert argv[argv.index("-to") + 1] == "2.0" and "-ss" not in argv
    assert argv[argv.index("-ar") + 1] == "8000"
    assert argv[argv.index("-acodec") + 1] == "pcm_s24le"


def test_non_utf8_file_name_survives_into_argv() -> None:
    """A surrogate-escaped (non-UTF-8) file name is passed through byte-exact, not a crash."""
    src = Path(os.fsdecode(b"/in/caf\xe9.wav"))
    argv = normalize_argv(src, DST, NormalizeSpec(), channel=0)
    assert argv[argv.index("-i") + 1] == str(src)
    assert os.fsencode(argv[argv.index("-i") + 1]) == b"/in/caf\xe9.wav"
    assert argv[-1] == str(DST)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(None, None, 10.0), (2.0, None, 8.0), (None, 4.0, 4.0), (2.0, 4.5, 2.5), (9.0, 30.0, 1.0)],
)
def test_check_trim_expected_length(
    start: float | None, end: float | None, expected: float
) -> None:
    """The expected output length is the trimmed span, with end_s capped at the duration."""
    assert check_trim(PROBE, start, end, "x.mp3") == pytest.approx(expected)


@pytest.mark.parametrize(("start", "end"), [(10.0, None), (12.0, 14.0), (9.995, None)])
def test_check_trim_rejects_spans_past_the_end(start: float, end: float | None) -> None:
    """A start at or past the end, or a span under 10 ms, is bad_trim naming the file."""
    with pytest.raises(MediaRejected) as info:
        check_trim(PROBE, start, end, "/in/talk one.mp3")
    assert info.value.code is FailureCode.BAD_TRIM
    assert "/in/talk one.mp3" in info.value.message
