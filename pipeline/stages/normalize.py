"""Normalize: any source to 16 kHz mono 16-bit WAV, trimmed and channel-picked.

The ffmpeg command is data (:func:`normalize_argv`, compared in tests); :func:`normalize`
runs it through ``run_media`` and checks that what came out is as long as the source said it
would be, which is how truncated files are caught (ffmpeg decodes half an MP3 and exits 0).
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import ffmpeg

from pipeline.errors import FailureCode, MediaRejected, SourceMissing
from pipeline.media import MediaCommandError, run_media
from pipeline.models import NormalizedAudio, NormalizeSpec, ProbeResult, human_bytes

# A decode this much shorter than the container promised is a truncated/damaged file.
TRUNCATION_TOLERANCE = 0.9
TRUNCATION_SLACK_S = 0.5


def normalize_argv(
    src: Path,
    dst: Path,
    spec: NormalizeSpec,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    channel: int | None = None,
    max_bytes: int | None = None,
) -> list[str]:
    """The exact ffmpeg command line: first audio stream, 16 kHz mono PCM, trimmed if asked,
    stopping once the output reaches ``max_bytes`` (``-fs``)."""
    trim = {k: v for k, v in (("ss", start_s), ("to", end_s)) if v is not None}
    # pan picks one channel exactly instead of downmixing all of them; passed as -af
    # because ffmpeg-python's filter() escapes the '=' that pan's syntax needs.
    pick: dict[str, Any] = {"af": f"pan=mono|c0=c{channel}"} if channel is not None else {}
    if max_bytes is not None:
        pick["fs"] = max_bytes
    # ffmpeg-python hashes its arguments with str.encode("utf-8"), which raises on a
    # non-UTF-8 file name (a surrogate-escaped str such as "caf\udce9.wav"): compile with
    # placeholders and put the real paths back, so only subprocess sees them (it uses
    # os.fsencode and gets the original bytes back).
    paths = {"\x01bulkscribe-src\x01": str(src), "\x01bulkscribe-dst\x01": str(dst)}
    src_ph, dst_ph = paths
    out = ffmpeg.input(src_ph, **trim)["a:0"].output(
        dst_ph, ac=spec.channels, ar=spec.sample_rate, acodec=spec.codec, f="wav", **pick
    )
    argv: list[str] = [paths.get(a, a) for a in out.compile()]
    return [argv[0], "-nostdin", "-v", "error", "-y", *argv[1:]]


def check_trim(probe: ProbeResult, start_s: float | None, end_s: float | None, name: str) -> float:
    """Validate start_s/end_s against the real duration; return the expected output length."""
    start = start_s or 0.0
    end = probe.duration_s if end_s is None else min(end_s, probe.duration_s)
    if start >= probe.duration_s:
        raise MediaRejected(
            FailureCode.BAD_TRIM,
            f"{name}: start_s {start:g} is past the end of the audio ({probe.duration_s:.2f} s)",
        )
    if end - start < 0.01:
        raise MediaRejected(FailureCode.BAD_TRIM, f"{name}: the trimmed span is empty")
    return end - start


def normalize(
    src: Path,
    dst: Path,
    probe: ProbeResult,
    spec: NormalizeSpec,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    channel: int | None = None,
    name: str | None = None,
    max_bytes: int | None = None,
) -> NormalizedAudio:
    """Decode ``src`` into ``dst``; at most ``max_bytes`` of it (the item's scratch cap),
    refused up front when the declared length needs more, and stopped by ffmpeg when a
    header understated it (``dst`` removed either way)."""
    label = name or str(src)
    expected_s = check_trim(probe, start_s, end_s, label)
    if max_bytes is not None and wav_bytes(expected_s, spec) > max_bytes:
        raise _over_scratch(label, wav_bytes(expected_s, spec), max_bytes)
    if not src.exists():
        raise SourceMissing(f"{label} disappeared after it was probed")
    argv = normalize_argv(
        src, dst, spec, start_s=start_s, end_s=end_s, channel=channel, max_bytes=max_bytes
    )
    # Generous: decoding runs at hundreds of times real time; a hang is the only way to hit it.
    timeout_s = 120.0 + expected_s * 0.25
    try:
        run_media(argv, timeout_s=timeout_s)
    except MediaCommandError as exc:
        if not src.exists():
            raise SourceMissing(f"{label} disappeared while it was being normalized") from None
        if exc.timed_out:
            raise MediaRejected(
                FailureCode.CORRUPT, f"{label}: ffmpeg did not finish in time"
            ) from None
        tail = (exc.stderr.strip().splitlines() or ["no detail"])[-1]
        raise MediaRejected(FailureCode.CORRUPT, f"{label} cannot be decoded: {tail}") from None
    if max_bytes is not None and dst.stat().st_size >= max_bytes:
        dst.unlink(missing_ok=True)
        raise _over_scratch(label, None, max_bytes)
    got_s = wav_duration(dst)
    if got_s < 0.01:
        raise MediaRejected(FailureCode.EMPTY_AUDIO, f"{label} decodes to no audio at all")
    short = got_s < expected_s * TRUNCATION_TOLERANCE and expected_s - got_s > TRUNCATION_SLACK_S
    if short and probe.exact_duration:
        raise MediaRejected(
            FailureCode.CORRUPT,
            f"{label} is truncated or damaged: it decodes to {got_s:.1f} s "
            f"of the {expected_s:.1f} s its header declares",
        )
    return NormalizedAudio(dst, got_s, offset_s=start_s or 0.0, sample_rate=spec.sample_rate)


def wav_bytes(seconds: float, spec: NormalizeSpec) -> int:
    """The size of ``seconds`` of normalized audio (PCM plus a WAV header)."""
    return int(seconds * spec.sample_rate * spec.channels * 2) + 44


def _over_scratch(label: str, needed: int | None, cap: int) -> MediaRejected:
    what = f"would decode to {human_bytes(needed)}" if needed else "decodes to more than that"
    return MediaRejected(
        FailureCode.TOO_LARGE,
        f"{label} {what} of normalized audio; an item may use {human_bytes(cap)} of scratch "
        "(limits.max_scratch_bytes)",
    )


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())
