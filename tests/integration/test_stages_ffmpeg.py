"""Stages with the real ffmpeg, through the library: vanishing files, channel picking, pdeathsig."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from e2e import media_processes, read_results, write_jsonl

from pipeline.errors import FailureCode, SourceMissing
from pipeline.flow.outputs import DirSink
from pipeline.inputs.manifest import load_manifest
from pipeline.ledger import open_ledger, sqlite_url
from pipeline.models import MediaLimits, NormalizeSpec, ProbeResult
from pipeline.runner import EmbeddedRunner, RunConfig
from pipeline.settings import RetrySettings, Settings
from pipeline.stages.normalize import normalize
from pipeline.stages.prepare import PrepareContext, SourceSpec, prepare
from pipeline.stages.probe import probe
from pipeline.storage import LocalStore
from pipeline.wiring import build_context

pytestmark = pytest.mark.ffmpeg


def vanishing_prober(calls: list[Path]):  # type: ignore[no-untyped-def]
    """The real probe, after which the file is deleted (as if someone moved it away)."""

    def prober(path: Path, limits: MediaLimits, **kw: Any) -> ProbeResult:
        result = probe(path, limits, **kw)
        calls.append(path)
        path.unlink()
        return result

    return prober


def test_file_vanishing_between_probe_and_normalize_is_not_found(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """prepare() raises not_found saying the file disappeared after it was probed."""
    src = tmp_path / "moved-away.wav"
    shutil.copyfile(media["lv_0930"], src)
    calls: list[Path] = []
    ctx = PrepareContext(limits=MediaLimits(), http=httpx.Client, prober=vanishing_prober(calls))
    with pytest.raises(SourceMissing) as info:
        prepare(SourceSpec(str(src)), tmp_path / "work", ctx)
    assert calls == [src]
    assert info.value.code is FailureCode.NOT_FOUND
    assert info.value.message == f"{src} disappeared after it was probed"
    assert not (tmp_path / "work" / "audio.wav").exists()


def test_runner_fails_only_the_vanished_item(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through EmbeddedRunner (wired as the CLI wires it) the item is FAILED not_found."""
    src = tmp_path / "moved-away.wav"
    shutil.copyfile(media["lv_0930"], src)
    rows = [{"id": "gone", "source": str(src)}]
    manifest = load_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    ledger = open_ledger(sqlite_url(out / ".bulkscribe" / "ledger.db"))
    settings = Settings(retry=RetrySettings(max_attempts=1), formats=("json",))
    sink = DirSink(out)
    with httpx.Client() as http:
        ctx = build_context(
            settings,
            ledger=ledger,
            owner="test",
            sinks=lambda _b: sink,
            scratch=tmp_path / "scratch",
            store=LocalStore(out / "media"),
            http=http,
            dead_letters=False,
            prober=vanishing_prober([]),
        )
        runner = EmbeddedRunner(
            cfg=RunConfig(
                out_dir=out,
                engine="local",
                model="tiny.en",
                language=None,
                formats=("json",),
                workers=1,
                retry=settings.retry,
            ),
            ctx=ctx,
        )
        summary = runner.run(manifest)
    assert (summary.ok, summary.processed) == (False, 1)
    (line,) = read_results(out)
    assert (line["id"], line["status"], line["error"]["code"]) == ("gone", "FAILED", "not_found")
    assert line["error"]["message"] == f"{src} disappeared after it was probed"
    assert [(r.key, r.attempt) for r in ledger.list_items()] == [("gone", 1)]


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16_000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def tone_share(x: np.ndarray, hz: float = 440.0) -> float:
    """Share of the signal's energy within 20 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 16_000)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / spectrum.sum())


def test_normalize_picks_exactly_one_channel(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Channel 0 of the stereo file is the pure tone, channel 1 the speech: not a downmix."""
    src = media["stereo"]
    probed = probe(src, MediaLimits(), channel=1)
    assert (probed.channels, probed.sample_rate) == (2, 16_000)
    left = normalize(src, tmp_path / "l.wav", probed, NormalizeSpec(), channel=0)
    right = normalize(src, tmp_path / "r.wav", probed, NormalizeSpec(), channel=1)
    assert tone_share(samples(left.path)) > 0.95
    assert tone_share(samples(right.path)) < 0.05
    assert left.duration_s == pytest.approx(probed.duration_s, abs=0.01)


def test_normalize_trims_and_remembers_the_offset(media, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """start_s=1.0, end_s=2.5 gives 1.5 s of 16 kHz mono audio whose offset is 1.0 s."""
    src = media["lv_opus"]  # Ogg/Opus, stereo: a codec that seeks by pages
    probed = probe(src, MediaLimits())
    got = normalize(src, tmp_path / "t.wav", probed, NormalizeSpec(), start_s=1.0, end_s=2.5)
    assert got.offset_s == 1.0
    assert got.duration_s == pytest.approx(1.5, abs=0.03)
    assert len(samples(got.path)) == pytest.approx(24_000, abs=500)


CHILD = textwrap.dedent("""
    import sys, threading
    from pipeline.media import run_media
    marker = sys.argv[1]
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i",
            "anullsrc=r=8000:cl=mono:d=30", "-metadata", "title=" + marker, "-f", "null", "-"]
    t = threading.Thread(target=run_media, args=(argv,), kwargs={"timeout_s": 60})
    t.start()
    t.join()
""")


def test_ffmpeg_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """kill -9 of a process inside run_media() also kills its ffmpeg (PR_SET_PDEATHSIG)."""
    marker = f"bulkscribe-pdeathsig-{os.getpid()}-{tmp_path.name}"
    parent = subprocess.Popen([sys.executable, "-c", CHILD, marker])
    try:
        deadline = time.monotonic() + 20
        while not (found := media_processes(marker)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found, "ffmpeg never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while media_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert media_processes(marker) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid, _ in media_processes(marker):  # only if the assertion above failed
            os.kill(pid, signal.SIGKILL)
