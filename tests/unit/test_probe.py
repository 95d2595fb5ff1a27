"""Unit tests for pipeline.stages.probe.read_probe: every rejection, on saved ffprobe reports.

The reports below are trimmed copies of what ``ffprobe -show_format -show_streams -of json``
printed for files generated with ffmpeg (a PNG, a text file, an H.264 clip, a zero-length WAV,
a stereo WAV); no ffprobe runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import FailureCode, MediaRejected
from pipeline.models import MediaLimits, ProbeResult
from pipeline.stages.probe import probe_argv, read_probe

NAME = "/data/in/interview-07.wav"
LIMITS = MediaLimits(max_duration_s=3600.0, max_bytes=50_000_000)


def report(streams: list[dict[str, Any]], **fmt: Any) -> dict[str, Any]:
    return {"streams": streams, "format": fmt}


PCM_MONO = {"codec_name": "pcm_s16le", "codec_type": "audio", "sample_rate": "16000", "channels": 1}
STEREO = report(
    [
        {
            "codec_name": "pcm_s16le",
            "codec_type": "audio",
            "sample_rate": "16000",
            "channels": 2,
            "duration": "5.196000",
        }
    ],
    nb_streams=1,
    format_name="wav",
    duration="5.196000",
    size="332622",
)
PNG = report(
    [{"codec_name": "png", "codec_type": "video", "width": 32, "height": 32}],
    nb_streams=1,
    format_name="png_pipe",
    size="119",
)
TTY = report(
    [
        {
            "codec_name": "ansi",
            "codec_type": "video",
            "width": 640,
            "height": 400,
            "duration": "0.240000",
        }
    ],
    nb_streams=1,
    format_name="tty",
    duration="0.240000",
    size="1381",
)
H264_ONLY = report(
    [
        {
            "codec_name": "h264",
            "codec_type": "video",
            "width": 64,
            "height": 64,
            "duration": "2.000000",
        }
    ],
    nb_streams=1,
    format_name="mov,mp4,m4a,3gp,3g2,mj2",
    duration="2.000000",
)
ZERO_WAV = report([PCM_MONO], nb_streams=1, format_name="wav", size="78")


def rejected(
    rep: dict[str, Any],
    *,
    size: int = 1000,
    channel: int | None = None,
    limits: MediaLimits = LIMITS,
) -> MediaRejected:
    with pytest.raises(MediaRejected) as info:
        read_probe(rep, limits, size_bytes=size, channel=channel, name=NAME)
    assert NAME in info.value.message, info.value.message
    return info.value


def test_good_stereo_wav_is_described() -> None:
    """A stereo WAV report becomes a ProbeResult with its container, codec and numbers."""
    got = read_probe(STEREO, LIMITS, size_bytes=332_622, channel=1, name=NAME)
    assert got == ProbeResult(
        container="wav",
        codec="pcm_s16le",
        duration_s=5.196,
        channels=2,
        sample_rate=16_000,
        size_bytes=332_622,
        stream_index=0,
    )


def test_container_is_the_first_demuxer_name() -> None:
    """ffprobe's comma list of demuxer names is reduced to its first entry."""
    rep = report(
        [{**PCM_MONO, "codec_name": "aac"}, H264_ONLY["streams"][0]],
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration="12.5",
    )
    got = read_probe(rep, LIMITS, size_bytes=10, name=NAME)
    assert (got.container, got.codec, got.duration_s) == ("mov", "aac", 12.5)


@pytest.mark.parametrize(
    ("rep", "kind"),
    [
        pytest.param(report([], format_name="wav"), "wav", id="no-streams"),
        pytest.param({}, "unknown data", id="empty-report"),
        pytest.param(PNG, "png", id="png_pipe"),
        pytest.param(TTY, "ansi", id="tty-text"),
        pytest.param(
            report([{"codec_name": "mjpeg", "codec_type": "video"}], format_name="image2"),
            "mjpeg",
            id="jpeg-image2",
        ),
    ],
)
def test_pictures_text_and_nothing_are_not_media(rep: dict[str, Any], kind: str) -> None:
    """No audio and no real video (an image, ANSI text, nothing) is not_media, saying what it is."""
    err = rejected(rep)
    assert err.code is FailureCode.NOT_MEDIA
    assert f"ffprobe reads it as {kind}" in err.message


def test_video_without_audio_is_no_audio_stream() -> None:
    """An H.264 clip with no audio track is no_audio_stream and names the video codec."""
    err = rejected(H264_ONLY)
    assert err.code is FailureCode.NO_AUDIO_STREAM
    assert "h264" in err.message


@pytest.mark.parametrize(
    "rep",
    [
        pytest.param(ZERO_WAV, id="no-duration"),
        pytest.param(
            report([{**PCM_MONO, "duration": "N/A"}], format_name="wav", duration="N/A"), id="N/A"
        ),
        pytest.param(report([PCM_MONO], format_name="wav", duration="0.000000"), id="zero"),
        pytest.param(
            report([PCM_MONO], format_name="wav", duration="0.0004"), id="under-min-duration"
        ),
        pytest.param(report([PCM_MONO], format_name="wav", duration="garbage"), id="unparsable"),
    ],
)
def test_no_samples_is_empty_audio(rep: dict[str, Any]) -> None:
    """A duration that is missing, "N/A", zero or below the minimum is empty_audio."""
    assert rejected(rep).code is FailureCode.EMPTY_AUDIO


def test_stream_duration_is_used_when_the_container_has_none() -> None:
    """A container duration of "N/A" falls back to the stream's own duration."""
    rep = report([{**PCM_MONO, "duration": "3.25"}], format_name="ogg", duration="N/A")
    assert read_probe(rep, LIMITS, size_bytes=10, name=NAME).duration_s == 3.25


def test_over_the_duration_limit_is_too_long() -> None:
    """One second over max_duration_s is too_long, with both lengths as h:mm:ss."""
    rep = report([PCM_MONO], format_name="wav", duration="3601")
    err = rejected(rep)
    assert err.code is FailureCode.TOO_LONG
    assert "1:00:01" in err.message and "1:00:00" in err.message


def test_exactly_the_duration_limit_is_accepted() -> None:
    """A file exactly max_duration_s long is within the limit."""
    rep = report([PCM_MONO], format_name="wav", duration="3600")
    assert read_probe(rep, LIMITS, size_bytes=10, name=NAME).duration_s == 3600.0


def test_over_the_size_limit_is_too_large() -> None:
    """One byte over max_bytes is too_large; the limit itself is accepted."""
    assert rejected(STEREO, size=LIMITS.max_bytes + 1).code is FailureCode.TOO_LARGE
    got = read_probe(STEREO, LIMITS, size_bytes=LIMITS.max_bytes, name=NAME)
    assert got.size_bytes == LIMITS.max_bytes


@pytest.mark.parametrize("channel", [2, 7])
def test_missing_channel_is_bad_channel(channel: int) -> None:
    """Asking for channel 2 or 7 of a stereo file is bad_channel, naming the channel count."""
    err = rejected(STEREO, channel=channel)
    assert err.code is FailureCode.BAD_CHANNEL
    assert "has 2 channel(s)" in err.message and f"channel {channel} " in err.message


def test_audio_stream_without_channels_is_corrupt() -> None:
    """An audio stream that reports 0 channels is corrupt."""
    rep = report([{**PCM_MONO, "channels": 0}], format_name="wav", duration="2")
    assert rejected(rep).code is FailureCode.CORRUPT


def test_probe_argv_is_json_of_format_and_streams() -> None:
    """The ffprobe command asks for format and streams as JSON, errors only, no shell."""
    assert probe_argv(Path("/a b/c.mp3")) == [
        "ffprobe",
        "-v",
        "error",
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        "/a b/c.mp3",
    ]


@pytest.mark.parametrize(
    ("rate", "code"),
    [
        ("1", FailureCode.LOW_SAMPLE_RATE),
        ("3999", FailureCode.LOW_SAMPLE_RATE),
        ("4000", None),
        ("8000", None),
    ],
)
def test_sample_rates_below_4_khz_are_refused(rate: str, code: FailureCode | None) -> None:
    """A header at 1 Hz (80 KB claiming 11 hours) is refused; telephony's 8 kHz is not."""
    rep = report([{**PCM_MONO, "sample_rate": rate, "duration": "40000.0"}], format_name="wav")
    limits = MediaLimits(max_duration_s=12 * 3600.0)
    if code is None:
        assert read_probe(rep, limits, size_bytes=80_044, name=NAME).sample_rate == int(rate)
    else:
        assert rejected(rep, size=80_044, limits=limits).code is code
