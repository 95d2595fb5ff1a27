"""Shared fixtures: generated and recorded speech, the real model, tool checks.

Media is generated (espeak-ng, ffmpeg lavfi) or taken from Debian's pocketsphinx-testdata
(real LibriVox recordings with transcripts), never downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import HARVARD, LIBRIVOX_DIR, ffmpeg, normalize_words, say, wer

__all__ = ["HARVARD", "LIBRIVOX_DIR", "ffmpeg", "normalize_words", "say", "wer"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail loudly, not skip, when a tool the suite needs is missing."""
    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(f"missing tools: {', '.join(missing)} (run `make deps`)")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def harvard_wav(media_dir: Path) -> Path:
    """About 12 s of espeak-ng speech: Harvard list 1, sentences 1-4, 16 kHz mono WAV."""
    return say(" ".join(HARVARD[:4]), media_dir / "harvard.wav")


@pytest.fixture(scope="session")
def harvard_text() -> str:
    return " ".join(HARVARD[:4])


@pytest.fixture(scope="session")
def harvard_mp3(harvard_wav: Path, media_dir: Path) -> Path:
    out = media_dir / "harvard.mp3"
    ffmpeg(
        [
            "-i",
            str(harvard_wav),
            "-ac",
            "2",
            "-ar",
            "44100",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "64k",
            str(out),
        ]
    )
    return out


@pytest.fixture(scope="session")
def librivox() -> list[tuple[Path, str]]:
    """Real read speech (LibriVox, public domain) with its reference transcripts."""
    listing = LIBRIVOX_DIR / "transcription"
    if not listing.is_file():
        pytest.fail("pocketsphinx-testdata is not installed (run `make deps`)")
    out = []
    for line in listing.read_text().splitlines():
        m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if m:
            out.append((LIBRIVOX_DIR / f"{m.group(2)}.wav", m.group(1)))
    return out


@pytest.fixture(scope="session")
def make_media(media_dir: Path) -> Callable[..., Path]:
    """Build small media files on demand: tones, silence, stereo, video, from lavfi."""

    def make(name: str, *lavfi_and_args: str) -> Path:
        out = media_dir / name
        if not out.exists():
            ffmpeg([*lavfi_and_args, str(out)])
        return out

    return make


@pytest.fixture(scope="session")
def tiny_engine():  # type: ignore[no-untyped-def]
    """The real tiny.en model, loaded once for the whole session."""
    from pipeline.asr.local import LocalEngine
    from pipeline.settings import LocalEngineSettings

    engine = LocalEngine("tiny.en", LocalEngineSettings(cpu_threads=2))
    engine.load()
    return engine


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``bulkscribe`` console script in a subprocess."""
    exe = Path(sys.executable).with_name("bulkscribe")

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [str(exe), *args], capture_output=True, text=True, env=full_env, timeout=timeout
        )

    return run
