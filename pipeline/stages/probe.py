"""Probe: is this file usable audio, and what is it?

:func:`read_probe` is pure (ffprobe's JSON in, a :class:`ProbeResult` or a coded rejection
out) so every rejection is tested on saved reports; :func:`probe` only runs ffprobe.
ffprobe's exit code is not enough: it accepts zero-length WAVs and reads text files as ANSI
art ("tty") and PNGs as one-frame video, so those are checked here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import FailureCode, MediaRejected, SourceMissing
from pipeline.media import MediaCommandError, run_media
from pipeline.models import MediaLimits, ProbeResult, human_bytes

# Demuxers and codecs that mean "a picture or text", not a recording.
_IMAGE_FORMATS = {"image2", "tty", "bin", "xbin", "adf", "idf", "gif", "apng", "webp_pipe"}
_IMAGE_CODECS = {
    "png",
    "mjpeg",
    "bmp",
    "gif",
    "webp",
    "tiff",
    "ansi",
    "bintext",
    "xbin",
    "idf",
    "jpegls",
    "jpeg2000",
    "pam",
    "pbm",
    "pgm",
    "ppm",
    "apng",
    "svg",
    "qoi",
}

PROBE_TIMEOUT_S = 60.0


def probe_argv(path: Path) -> list[str]:
    return ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)]


def read_probe(
    report: Mapping[str, Any],
    limits: MediaLimits,
    *,
    size_bytes: int,
    channel: int | None = None,
    name: str = "file",
) -> ProbeResult:
    """ffprobe's JSON in; a ProbeResult or a MediaRejected with a stable code out."""
    fmt = report.get("format") or {}
    streams = list(report.get("streams") or [])
    format_name = str(fmt.get("format_name") or "")
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        video = [s for s in streams if s.get("codec_type") == "video"]
        imagery = (
            format_name.endswith("_pipe")
            or format_name in _IMAGE_FORMATS
            or (video and all(s.get("codec_name") in _IMAGE_CODECS for s in video))
        )
        if imagery or not video:
            kind = video[0].get("codec_name") if video else format_name or "unknown data"
            raise MediaRejected(
                FailureCode.NOT_MEDIA, f"{name} is not audio or video (ffprobe reads it as {kind})"
            )
        raise MediaRejected(
            FailureCode.NO_AUDIO_STREAM,
            f"{name} has video ({video[0].get('codec_name')}) but no audio stream",
        )
    stream = audio[0]
    duration_s = _duration(fmt, stream)
    has_video = any(s.get("codec_type") == "video" and not _is_cover(s) for s in streams)
    # Only a duration the audio stream itself declares (or a file with nothing but audio)
    # is precise enough to call a shorter decode "truncated".
    exact = stream.get("duration") not in (None, "N/A") or not has_video
    if duration_s is None or duration_s < limits.min_duration_s:
        raise MediaRejected(
            FailureCode.EMPTY_AUDIO,
            f"{name} has an audio stream with no samples (duration {duration_s or 0:.3f} s)",
        )
    if size_bytes > limits.max_bytes:
        raise MediaRejected(
            FailureCode.TOO_LARGE,
            f"{name} is {human_bytes(size_bytes)}; the limit is {human_bytes(limits.max_bytes)}",
        )
    if duration_s > limits.max_duration_s:
        raise MediaRejected(
            FailureCode.TOO_LONG,
            f"{name} lasts {_hms(duration_s)}; the limit is {_hms(limits.max_duration_s)}",
        )
    sample_rate = int(stream.get("sample_rate") or 0)
    if 0 < sample_rate < limits.min_sample_rate:
        raise MediaRejected(
            FailureCode.LOW_SAMPLE_RATE,
            f"{name} is sampled at {sample_rate} Hz; speech needs at least "
            f"{limits.min_sample_rate} Hz",
        )
    channels = int(stream.get("channels") or 0)
    if channels < 1:
        raise MediaRejected(FailureCode.CORRUPT, f"{name}: audio stream reports no channels")
    if channel is not None and channel >= channels:
        raise MediaRejected(
            FailureCode.BAD_CHANNEL,
            f"{name} has {channels} channel(s); channel {channel} does not exist "
            "(they count from 0)",
        )
    return ProbeResult(
        container=format_name.split(",")[0],
        codec=str(stream.get("codec_name") or "unknown"),
        duration_s=duration_s,
        channels=channels,
        sample_rate=sample_rate,
        size_bytes=size_bytes,
        stream_index=0,
        exact_duration=exact,
    )


def ffprobe_report(path: Path, st: os.stat_result) -> Mapping[str, Any]:
    """ffprobe's JSON report on ``path`` (``st``: its stat, for caches that key on it).
    Raises :class:`MediaCommandError` when ffprobe fails."""
    out = run_media(probe_argv(path), timeout_s=PROBE_TIMEOUT_S)
    try:
        report = json.loads(out.stdout or b"{}")
    except json.JSONDecodeError:
        raise MediaRejected(FailureCode.CORRUPT, "ffprobe printed unreadable JSON") from None
    return report if isinstance(report, dict) else {}


# Where ffprobe reports come from: ffprobe itself, or a cache in front of it
# (pipeline/planning/probe_cache.py) so a plan followed by a run probes each file once.
ReportSource = Callable[[Path, os.stat_result], Mapping[str, Any]]


def probe(
    path: Path,
    limits: MediaLimits,
    *,
    channel: int | None = None,
    name: str | None = None,
    reports: ReportSource = ffprobe_report,
) -> ProbeResult:
    """Run ffprobe on a local file (through ``reports``) and judge the result."""
    label = name or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceMissing(f"{label} does not exist") from None
    except OSError as exc:
        raise MediaRejected(
            FailureCode.NOT_FOUND, f"{label} cannot be read: {exc.strerror}"
        ) from exc
    if path.is_dir():
        raise MediaRejected(FailureCode.NOT_MEDIA, f"{label} is a directory, not a file")
    if st.st_size == 0:
        raise MediaRejected(FailureCode.EMPTY_AUDIO, f"{label} is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise MediaRejected(FailureCode.NOT_FOUND, f"{label} is not readable (permission denied)")
    try:
        report = reports(path, st)
    except MediaCommandError as exc:
        raise _classify(exc, label, path) from None
    except MediaRejected as exc:
        raise MediaRejected(exc.code, f"{label}: {exc.message}") from None
    return read_probe(report, limits, size_bytes=st.st_size, channel=channel, name=label)


def _classify(exc: MediaCommandError, label: str, path: Path) -> MediaRejected | SourceMissing:
    if not path.exists():
        return SourceMissing(f"{label} disappeared while being probed")
    err = exc.stderr
    if exc.timed_out:
        return MediaRejected(FailureCode.CORRUPT, f"{label}: ffprobe did not finish in time")
    if "Invalid data found when processing input" in err or "could not find codec" in err.lower():
        return MediaRejected(FailureCode.NOT_MEDIA, f"{label} is not a media file ffmpeg can read")
    tail = err.strip().splitlines()[-1:] or ["no detail"]
    return MediaRejected(FailureCode.CORRUPT, f"{label} cannot be decoded: {tail[0]}")


def _duration(fmt: Mapping[str, Any], stream: Mapping[str, Any]) -> float | None:
    # The audio stream's own duration first: a video's container duration is the longest
    # stream's, often longer than its sound track.
    for value in (stream.get("duration"), fmt.get("duration")):
        try:
            if value not in (None, "N/A"):
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _is_cover(stream: Mapping[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
