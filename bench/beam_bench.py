"""Beam size: word error rate and speed of beam 1 (greedy) vs beam 5.

Two sets: the five LibriVox utterances of Debian's pocketsphinx-testdata (24.7 s of real
read speech in short clips, with reference transcripts), and 90 s of continuous espeak-ng
speech (Harvard sentences, the benchmarks' usual material), whose speed is closer to that
of long archive files (short clips are padded to Whisper's 30 s, so the encoder dominates).
Each is transcribed through bulkscribe's LocalEngine exactly as a run does (windows, VAD,
word timestamps), with tiny.en and base, 2 threads. WER joins references and hypotheses,
normalised as in the tests; speed is the best of REPEAT passes, wall and CPU (all threads),
as a real-time factor (processing time / audio time).

    python bench/beam_bench.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "bench"))

from _media import CACHE, speech_minutes  # noqa: E402
from support import LIBRIVOX_DIR, wer  # noqa: E402

from pipeline.asr.local import LocalEngine  # noqa: E402
from pipeline.asr.windows import transcribe_file  # noqa: E402
from pipeline.demo import HARVARD  # noqa: E402
from pipeline.models import AsrOptions, NormalizedAudio  # noqa: E402
from pipeline.settings import LocalEngineSettings  # noqa: E402
from pipeline.stages.normalize import wav_duration  # noqa: E402

THREADS = 2
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
BEAMS = (1, 5)
MODELS = ("tiny.en", "base")


def clips(tmp: Path) -> list[tuple[NormalizedAudio, str]]:
    """The LibriVox utterances, normalized to 16 kHz mono, with their references."""
    out = []
    for line in (LIBRIVOX_DIR / "transcription").read_text().splitlines():
        m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if not m:
            continue
        wav = tmp / f"{m.group(2)}.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-i",
                str(LIBRIVOX_DIR / f"{m.group(2)}.wav"),
                "-ac",
                "1",
                "-ar",
                "16000",
                str(wav),
            ],
            check=True,
        )
        out.append((NormalizedAudio(wav, wav_duration(wav)), m.group(1)))
    return out


def espeak(tmp: Path) -> list[tuple[NormalizedAudio, str]]:
    """The benchmarks' 90 s of Harvard sentences, normalized, with its reference."""
    speech_minutes(1)  # makes the 90 s base file
    wav = tmp / "espeak.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(CACHE / "speech-base.wav"),
            "-ac",
            "1",
            "-ar",
            "16000",
            str(wav),
        ],
        check=True,
    )
    return [(NormalizedAudio(wav, wav_duration(wav)), " ".join(HARVARD * 3))]


def measure(model: str, beam: int, audio: list[tuple[NormalizedAudio, str]]) -> dict[str, float]:
    engine = LocalEngine(model, LocalEngineSettings(cpu_threads=THREADS, beam_size=beam))
    engine.load()
    best_wall = best_cpu = float("inf")
    hypothesis = ""
    for _ in range(REPEAT):
        t0, c0 = time.perf_counter(), time.process_time()
        texts = [transcribe_file(a, engine, AsrOptions()).text for a, _ in audio]
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        hypothesis = " ".join(texts)
    seconds = sum(a.duration_s for a, _ in audio)
    reference = " ".join(ref for _, ref in audio)
    return {
        "wer": wer(reference, hypothesis),
        "rtf": best_wall / seconds,
        "cpu_rtf": best_cpu / seconds,
        "audio_s": seconds,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"librivox": clips(Path(tmp)), "espeak": espeak(Path(tmp))}
        print(f"best of {REPEAT}, {THREADS} threads, int8; ratios are beam 5 / beam 1")
        print(
            f"{'set':<9} {'model':<8} {'beam':>4} {'WER':>6} {'RTF':>7} {'CPU RTF':>8} "
            f"{'wall x':>7} {'CPU x':>6}"
        )
        for name, audio in sets.items():
            for model in MODELS:
                first: dict[str, float] = {}
                for beam in BEAMS:
                    r = measure(model, beam, audio)
                    first = first or r
                    print(
                        f"{name:<9} {model:<8} {beam:>4} {r['wer']:>6.1%} {r['rtf']:>7.4f} "
                        f"{r['cpu_rtf']:>8.4f} {r['rtf'] / first['rtf']:>6.2f}x "
                        f"{r['cpu_rtf'] / first['cpu_rtf']:>5.2f}x"
                    )


if __name__ == "__main__":
    main()
