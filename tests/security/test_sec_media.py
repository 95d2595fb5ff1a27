"""Hostile media: a tiny file must not become hours of audio in scratch.

An 80 KB WAV whose header says 1 Hz lasts 40,000 s, under the 12 h limit; decoded to
16 kHz it is 1.2 GB of scratch. Such files are refused at probe time, and every item's
normalized audio is capped by ``limits.max_scratch_bytes``. Real files, real ffmpeg, the real
CLI.
"""

from __future__ import annotations

import json
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ffmpeg

RunCli = Callable[..., subprocess.CompletedProcess[str]]
pytestmark = pytest.mark.ffmpeg


@pytest.fixture
def one_hertz_wav(tmp_path: Path) -> Path:
    """80 KB of 16-bit mono samples declared at 1 Hz: 40,000 s by its header."""
    path = tmp_path / "slow.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(1)
        w.writeframes(b"\x00\x10" * 40_000)
    return path


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    """Three seconds of 440 Hz at 16 kHz: 96 kB once normalized."""
    path = tmp_path / "tone.wav"
    ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-ar", "16000", str(path)])
    return path


def results(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def scratch_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.model
def test_one_hertz_wav_fails_fast_and_the_batch_goes_on(
    run_cli: RunCli, tmp_path: Path, one_hertz_wav: Path, tone: Path
) -> None:
    """The 1 Hz file fails at probe with low_sample_rate; the tone beside it succeeds and
    no scratch is left behind."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "slow", "source": str(one_hertz_wav)})
        + "\n"
        + json.dumps({"id": "tone", "source": str(tone)})
        + "\n"
    )
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    started = time.monotonic()
    proc = run_cli(
        "run", str(manifest), "--out", str(out), env={"BULKSCRIBE_SCRATCH_DIR": str(scratch)}
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    got = results(out)
    assert got["slow"]["status"] == "FAILED"
    assert got["slow"]["error"]["code"] == "low_sample_rate"
    assert "1 Hz" in got["slow"]["error"]["message"]
    assert got["tone"]["status"] == "SUCCEEDED"
    assert elapsed < 60  # decoding it took 79 s alone
    assert scratch_bytes(scratch) == 0
    assert not list(scratch.iterdir())


def test_low_scratch_cap_fails_a_normal_file_with_too_large(
    run_cli: RunCli, tmp_path: Path, tone: Path
) -> None:
    """BULKSCRIBE_LIMITS__MAX_SCRATCH_BYTES below what a file decodes to: too_large, named
    setting in the message, nothing left in scratch."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "tone", "source": str(tone)}) + "\n")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    proc = run_cli(
        "run",
        str(manifest),
        "--out",
        str(out),
        env={
            "BULKSCRIBE_LIMITS__MAX_SCRATCH_BYTES": "50000",
            "BULKSCRIBE_SCRATCH_DIR": str(scratch),
        },
    )
    assert proc.returncode == 1, proc.stderr
    error = results(out)["tone"]["error"]
    assert error["code"] == "too_large"
    assert "limits.max_scratch_bytes" in error["message"]
    assert not list(scratch.iterdir())


def test_header_that_understates_its_length_is_stopped_by_ffmpeg(
    tmp_path: Path, tone: Path
) -> None:
    """A probe that claims 1 s (32 kB, under a 50 kB cap) for a 3 s file: ffmpeg stops at the
    cap (-fs), the item fails too_large and the partial output is removed."""
    from pipeline.errors import MediaRejected
    from pipeline.models import NormalizeSpec, ProbeResult
    from pipeline.stages.normalize import normalize

    lying = ProbeResult("wav", "pcm_s16le", 1.0, 1, 16_000, tone.stat().st_size)
    dst = tmp_path / "audio.wav"
    with pytest.raises(MediaRejected) as caught:
        normalize(tone, dst, lying, NormalizeSpec(), max_bytes=50_000)
    assert caught.value.code == "too_large"
    assert not dst.exists()


def test_default_scratch_cap_fits_twelve_hours() -> None:
    """The default cap holds the longest file any model takes (12 h at 16 kHz mono s16)
    and not much more."""
    from pipeline.models import NormalizeSpec
    from pipeline.settings import load_settings
    from pipeline.stages.normalize import wav_bytes

    cap = load_settings().limits.max_scratch_bytes
    assert (
        wav_bytes(12 * 3600, NormalizeSpec()) <= cap < 1.1 * wav_bytes(12 * 3600, NormalizeSpec())
    )
