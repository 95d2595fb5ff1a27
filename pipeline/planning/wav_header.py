"""ffprobe's report on a plain PCM WAV, read from its header without running ffprobe.

Starting ffprobe costs tens of milliseconds of CPU per file (hundreds on a busy machine),
which is most of a cold ``plan`` of a folder of short recordings. For the one container
whose duration is plain arithmetic, a RIFF/WAVE file with a PCM or IEEE-float ``fmt `` chunk
and a ``data`` chunk that fits in the file, :func:`read_wav_report` computes the same
fields ffprobe's wav demuxer reports (libavformat/wavdec.c: frames = data bytes * 8 /
(channels * bits per sample); durations printed to the microsecond) and that
:func:`pipeline.stages.probe.read_probe` judges. Anything else (extensible or compressed
formats, RF64, a data chunk running past the end of the file, a header cut short, odd
field values) answers None and ffprobe is run as before, so every bad file gets the code
`run` gives it. tests/unit/test_plan.py compares both readers' reports field by field.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.stages.probe import ReportSource, ffprobe_report

_PCM, _FLOAT = 1, 3
_CODECS = {
    (_PCM, 8): "pcm_u8",
    (_PCM, 16): "pcm_s16le",
    (_PCM, 24): "pcm_s24le",
    (_PCM, 32): "pcm_s32le",
    (_FLOAT, 32): "pcm_f32le",
    (_FLOAT, 64): "pcm_f64le",
}
MAX_CHUNKS = 32  # chunks looked at before ``data``; more is unusual enough for ffprobe


def read_wav_report(path: Path, st: os.stat_result) -> Mapping[str, Any] | None:
    """The report ffprobe would give for ``path``, or None to let ffprobe answer."""
    try:
        with path.open("rb") as f:
            return _parse(f, st.st_size)
    except (OSError, struct.error, ValueError):
        return None


def _parse(f: BinaryIO, size: int) -> Mapping[str, Any] | None:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt: tuple[int, ...] | None = None  # tag, channels, rate, byte rate, block align, bits
    pos = 12
    for _ in range(MAX_CHUNKS):
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return None
        tag, length = header[:4], struct.unpack("<I", header[4:])[0]
        body_at = pos + 8
        if tag == b"fmt ":
            if fmt is not None or length < 16:
                return None
            fmt = struct.unpack("<HHIIHH", f.read(16))
        elif tag == b"data":
            if fmt is None or length == 0 or body_at + length > size:
                return None  # ffprobe then guesses from the file size: let it
            return _report(fmt, length, size)
        pos = body_at + length + (length & 1)  # chunks are padded to an even length
    return None


def _report(fmt: tuple[int, ...], data_bytes: int, size: int) -> Mapping[str, Any] | None:
    tag, channels, rate, _byte_rate, block_align, bits = fmt
    codec = _CODECS.get((tag, bits))
    if codec is None or channels < 1 or rate < 1 or block_align != channels * bits // 8:
        return None
    frames = data_bytes * 8 // (channels * bits)
    seconds = f"{frames * (1 / rate):.6f}"  # as ffprobe prints it: ts * av_q2d(time_base)
    # The container's duration is the stream's rescaled to microseconds, rounded to nearest.
    micros = (frames * 1_000_000 + rate // 2) // rate
    return {
        "streams": [
            {
                "index": 0,
                "codec_name": codec,
                "codec_type": "audio",
                "sample_rate": str(rate),
                "channels": channels,
                "bits_per_sample": bits,
                "time_base": f"1/{rate}",
                "duration_ts": frames,
                "duration": seconds,
                "disposition": {"attached_pic": 0},
            }
        ],
        "format": {
            "nb_streams": 1,
            "format_name": "wav",
            "duration": f"{micros // 1_000_000}.{micros % 1_000_000:06d}",
            "size": str(size),
        },
        "read_by": "wav header",  # not ffprobe; kept in the probe cache for anyone looking
    }


def header_or_ffprobe(fallback: ReportSource = ffprobe_report) -> ReportSource:
    """A report source that reads plain WAV headers itself and runs ``fallback`` (ffprobe)
    for everything else."""

    def reports(path: Path, st: os.stat_result) -> Mapping[str, Any]:
        found = read_wav_report(path, st)
        return found if found is not None else fallback(path, st)

    return reports
