"""run_media beside a transcription: starting ffmpeg must not stall or hang other threads.

In a run with two workers one item is probed or normalized (run_media starts ffprobe/ffmpeg)
while another is transcribed (faster-whisper: OpenBLAS matmuls, CTranslate2 threads). The
child is started in a subprocess here, so a hang costs a timeout, not the test session.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]

STRESS = textwrap.dedent("""
    import os, threading, time, wave
    import numpy as np
    from pipeline.asr.base import AudioClip
    from pipeline.asr.local import LocalEngine
    from pipeline.media import run_media
    from pipeline.models import AsrOptions
    from pipeline.settings import LocalEngineSettings

    with wave.open({wav!r}) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    engine = LocalEngine("tiny.en", LocalEngineSettings(), concurrency=2)
    engine.load()
    done = [0]

    def transcribe_forever():
        while True:
            engine.transcribe(AudioClip(pcm), AsrOptions())
            done[0] += 1

    threading.Thread(target=transcribe_forever, daemon=True).start()
    spawned, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 6:
        run_media(["true"], timeout_s=10)
        spawned += 1
    print(spawned, done[0], flush=True)
    os._exit(0)  # the transcribing thread is inside native code: do not wait for it
""")


def test_starting_children_does_not_stall_a_transcription(librivox) -> None:  # type: ignore[no-untyped-def]
    """For 6 s of spawning children, a concurrent transcription loop keeps finishing clips."""
    wav = str(librivox[0][0])  # 7.1 s of speech: about 0.5 s per transcription on 2 cores
    try:
        proc = subprocess.run(
            [sys.executable, "-c", STRESS.format(wav=wav)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: the stress process made no progress for 30 s")
    spawned, transcribed = map(int, proc.stdout.split())
    assert spawned >= 200, f"only {spawned} children started in 6 s"
    assert transcribed >= 3, f"only {transcribed} transcriptions finished in 6 s"
