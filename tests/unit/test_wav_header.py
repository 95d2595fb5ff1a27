"""pipeline.planning.wav_header: plain WAV headers read as ffprobe reports them, field by field, on
real files checked against ffprobe itself; anything unusual is left to ffprobe, so a
plan's codes for bad files are the ones `run` gives."""

from __future__ import annotations

import struct
import wave
from pathlib import Path
from typing import Any

import pytest

from pipeline.inputs.manifest import load_inputs
from pipeline.models import MediaLimits
from pipeline.planning.plan import probe_all, probe_threads
from pipeline.planning.wav_header import header_or_ffprobe, read_wav_report
from pipeline.settings import LimitsSettings
from pipeline.stages.probe import ffprobe_report, read_probe

pytestmark = pytest.mark.ffmpeg

STREAM_KEYS = (
    "index",
    "codec_name",
    "codec_type",
    "sample_rate",
    "channels",
    "bits_per_sample",
    "time_base",
    "duration_ts",
    "duration",
)
FORMAT_KEYS = ("nb_streams", "format_name", "duration", "size")


def pcm(path: Path, rate: int, channels: int, width: int, frames: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(
            bytes(range(256)) * (frames * channels * width // 256)
            + bytes(frames * channels * width % 256)
        )
    return path


def riff(path: Path, *chunks: tuple[bytes, bytes], riff_size: int | None = None) -> Path:
    body = b"WAVE" + b"".join(
        tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
        for tag, data in chunks
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", riff_size or len(body)) + body)
    return path


def fmt(tag: int, channels: int, rate: int, bits: int, extra: bytes = b"") -> tuple[bytes, bytes]:
    align = channels * bits // 8
    return b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def good_files(root: Path) -> list[Path]:
    files = [
        pcm(root / f"p{rate}_{ch}_{w}_{frames}.wav", rate, ch, w, frames)
        for rate, ch, w, frames in [
            (8000, 1, 1, 8000),
            (11025, 2, 2, 12345),
            (16000, 1, 2, 1),
            (22050, 2, 3, 33076),
            (44100, 6, 2, 44101),
            (48000, 1, 4, 7),
            (96000, 2, 2, 96000 * 3 + 1),
        ]
    ]
    files.append(riff(root / "f32.wav", fmt(3, 2, 44100, 32), (b"data", bytes(8 * 44100))))
    files.append(riff(root / "f64.wav", fmt(3, 1, 16000, 64), (b"data", bytes(8 * 4001))))
    files.append(  # a LIST chunk of odd length (padded) before the data, a fact chunk
        riff(
            root / "list.wav",
            fmt(1, 1, 16000, 16),
            (b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00"),
            (b"fact", struct.pack("<I", 999)),
            (b"data", bytes(2 * 16000)),
        )
    )
    files.append(  # data that is not a whole number of frames, and a chunk after it
        riff(
            root / "ragged.wav",
            fmt(1, 2, 16000, 16),
            (b"data", bytes(4 * 1000 + 3)),
            (b"LIST", b"INFO"),
        )
    )
    return files


def test_plain_wavs_read_from_the_header_match_ffprobe(tmp_path: Path) -> None:
    """Every field read_probe judges (and the ones around them) equals ffprobe's, and so does
    the verdict, on PCM 8/16/24/32-bit and float 32/64, 1-6 channels, 8-96 kHz, with
    extra chunks and ragged data."""
    for path in good_files(tmp_path):
        st = path.stat()
        ours, theirs = read_wav_report(path, st), ffprobe_report(path, st)
        assert ours is not None, path.name
        (stream,) = ours["streams"]
        assert {k: stream[k] for k in STREAM_KEYS} == {
            k: theirs["streams"][0][k] for k in STREAM_KEYS
        }, path.name
        assert {k: ours["format"][k] for k in FORMAT_KEYS} == {
            k: theirs["format"][k] for k in FORMAT_KEYS
        }, path.name
        limits = MediaLimits(min_duration_s=0.0)
        assert read_probe(ours, limits, size_bytes=st.st_size) == read_probe(
            theirs, limits, size_bytes=st.st_size
        ), path.name


def unusual_files(root: Path) -> dict[str, Path]:
    whole = pcm(root / "whole.wav", 16000, 1, 2, 16000).read_bytes()
    (root / "text.wav").write_text("not audio at all\n")
    (root / "cut.wav").write_bytes(whole[:30])
    (root / "short-data.wav").write_bytes(whole[: len(whole) // 2])  # data runs past the end
    extensible = fmt(0xFFFE, 2, 48000, 24, struct.pack("<HHI", 22, 24, 3) + bytes(16))
    return {
        "text": root / "text.wav",
        "cut": root / "cut.wav",
        "short-data": root / "short-data.wav",
        "no-data": riff(root / "no-data.wav", fmt(1, 1, 16000, 16)),
        "empty-data": riff(root / "empty-data.wav", fmt(1, 1, 16000, 16), (b"data", b"")),
        "extensible": riff(root / "ext.wav", extensible, (b"data", bytes(6 * 480))),
        "adpcm": riff(root / "adpcm.wav", fmt(2, 1, 16000, 4), (b"data", bytes(256))),
        "12-bit": riff(root / "b12.wav", fmt(1, 1, 16000, 12), (b"data", bytes(300))),
        "rifx": root / "rifx.wav",
    }


def test_anything_unusual_is_left_to_ffprobe(tmp_path: Path) -> None:
    files = unusual_files(tmp_path)
    files["rifx"].write_bytes(b"RIFX" + files["no-data"].read_bytes()[4:])
    for name, path in files.items():
        assert read_wav_report(path, path.stat()) is None, name


def test_plan_gives_the_codes_ffprobe_gives(tmp_path: Path) -> None:
    """A plan over good and bad WAVs with header reading is, item for item (durations,
    codes, messages), the plan ffprobe alone gives: what `run` reports."""
    good_files(tmp_path)
    unusual_files(tmp_path)["rifx"].write_bytes(b"RIFX\x00\x00")
    entries = load_inputs((tmp_path,)).entries

    def plan(reports: Any) -> list[Any]:
        return probe_all(
            entries,
            engine="local",
            model="tiny.en",
            language=None,
            limits=LimitsSettings(),
            reports=reports,
        )

    fast, slow = plan(header_or_ffprobe(ffprobe_report)), plan(ffprobe_report)
    assert fast == slow
    assert sum(p.error is not None for p in fast) >= 6  # the bad ones are in it


def test_probe_threads_follow_the_cpu_count() -> None:
    assert [probe_threads(n) for n in (1, 2, 8, 64)] == [2, 4, 16, 32]
