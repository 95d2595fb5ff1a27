"""Fixtures for end-to-end tests: generated good and bad media, a local HTTP server, the CLI.

Every file is made here with ffmpeg or copied from Debian's pocketsphinx-testdata; nothing is
downloaded. Media is session-scoped so the whole suite builds it once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from e2e import BULKSCRIBE, LV, WORKERS, MediaServer, ffmpeg, make_handler

# --- media ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """Paths to generated inputs; ``refs`` maps a speech file to its reference transcript."""

    dir: Path
    files: dict[str, Path]
    refs: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


@pytest.fixture(scope="session")
def media(
    media_dir: Path, harvard_wav: Path, harvard_mp3: Path, librivox: list[tuple[Path, str]]
) -> Media:
    """Good speech in many containers, and every kind of bad input the issue lists."""
    d = media_dir / "e2e"
    d.mkdir(exist_ok=True)
    lv = {p.stem.removeprefix(LV): (p, ref) for p, ref in librivox}
    f: dict[str, Path] = {"harvard_wav": harvard_wav, "harvard_mp3": harvard_mp3}
    refs: dict[str, str] = {}

    def make(name: str, *args: str) -> Path:
        out = d / name
        if not out.exists():
            # -fs caps the output: a lavfi source without a duration would otherwise run on
            # until the disk is full. Every source below carries its own duration anyway.
            ffmpeg([*args, "-fs", "20M", str(out)])
        return out

    # Real speech in other containers and codecs.
    for key, src, ext, codec in (
        ("lv_m4a", "0870", "m4a", ["-c:a", "aac", "-b:a", "64k"]),
        ("lv_flac", "0890", "flac", ["-c:a", "flac"]),
        ("lv_opus", "0920", "ogg", ["-c:a", "libopus", "-b:a", "32k"]),
    ):
        f[key] = make(f"{key}.{ext}", "-i", str(lv[src][0]), "-ac", "2", *codec)
        refs[key] = lv[src][1]
    f["lv_video"] = make(
        "lv_video.mp4",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=10:duration=2.99",
        "-i",
        str(lv["0880"][0]),
        "-shortest",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    )
    refs["lv_video"] = lv["0880"][1]
    for key, src in (
        ("lv_0930", "0930"),
        ("lv_0880", "0880"),
        ("lv_0870", "0870"),
        ("lv_0890", "0890"),
    ):
        f[key] = lv[src][0]
        refs[key] = lv[src][1]
    # Stereo: a 440 Hz tone on the left, LibriVox speech on the right.
    f["stereo"] = make(
        "stereo_right_speech.wav",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=16000:duration=3.29",
        "-i",
        str(lv["0930"][0]),
        "-filter_complex",
        "[0:a][1:a]join=inputs=2:channel_layout=stereo[a]",
        "-map",
        "[a]",
    )
    refs["stereo"] = lv["0930"][1]
    # A LAME MP3 cut to half its bytes: the header still promises the full length.
    lame = make("lame.mp3", "-i", str(lv["0870"][0]), "-c:a", "libmp3lame", "-b:a", "64k")
    trunc = d / "truncated.mp3"
    trunc.write_bytes(lame.read_bytes()[: lame.stat().st_size // 2])
    f["truncated_mp3"] = trunc
    png = make("picture.png", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1", "-frames:v", "1")
    f["png_as_wav"] = d / "picture.wav"
    shutil.copyfile(png, f["png_as_wav"])
    f["text"] = d / "notes.txt"
    f["text"].write_text("These are meeting notes, not a recording.\n" * 30)
    f["video_only"] = make(
        "video_only.mp4",
        "-f",
        "lavfi",
        "-i",
        "testsrc=duration=2:size=64x64:rate=10",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
    )
    f["zero_wav"] = d / "zero_length.wav"  # a valid header and no samples
    with wave.open(str(f["zero_wav"]), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
    f["empty"] = d / "empty.wav"
    f["empty"].write_bytes(b"")
    f["directory"] = d / "folder.wav"
    f["directory"].mkdir(exist_ok=True)
    return Media(d, f, refs)


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_worker() -> Iterator[None]:
    """CLI runs that do not say --workers get e2e.WORKERS (see there why it is 1 for now).

    Opt-in (usefixtures, or a module fixture's argument), so other modules here keep theirs.
    """
    old = os.environ.get("BULKSCRIBE_WORKERS")
    os.environ["BULKSCRIBE_WORKERS"] = WORKERS
    yield
    if old is None:
        os.environ.pop("BULKSCRIBE_WORKERS", None)
    else:
        os.environ["BULKSCRIBE_WORKERS"] = old


@pytest.fixture(scope="session")
def bulkscribe() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real console script (like run_cli, but usable from module-scoped fixtures)."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BULKSCRIBE), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def http_media() -> Iterator[MediaServer]:
    """A threaded HTTP server on 127.0.0.1 for the module's tests, stopped afterwards."""
    server = MediaServer("", {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="http-media", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _root_helper(config: pytest.Config, name: str) -> Callable[..., object]:
    """A plain helper from tests/conftest.py, found among pytest's registered conftests."""
    root = Path(__file__).parents[1] / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == str(root):
            return getattr(plugin, name)  # type: ignore[no-any-return]
    raise LookupError(f"{root} is not loaded")


@pytest.fixture(scope="session")
def wer(pytestconfig: pytest.Config) -> Callable[[str, str], float]:
    """tests/conftest.py's word error rate, with its normalisation."""
    return _root_helper(pytestconfig, "wer")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def say(pytestconfig: pytest.Config) -> Callable[..., Path]:
    """tests/conftest.py's espeak-ng speech generator."""
    return _root_helper(pytestconfig, "say")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_CACHE_HOME for the session: where 'base' is reassembled on first use."""
    return tmp_path_factory.mktemp("xdg-cache")
