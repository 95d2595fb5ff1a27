"""Probe + normalize per audio hour: bulkscribe's stages vs plain ffprobe + ffmpeg.

Both sides do the same work on the same files, interleaved, best of N runs each:
  plain:      ffprobe -show_format -show_streams, then ffmpeg -> 16 kHz mono s16 WAV
  bulkscribe: pipeline.stages.probe.probe + pipeline.stages.normalize.normalize
Prints seconds per audio hour and the ratio (target <= 1.10).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _media import speech_minutes

from pipeline.models import MediaLimits, NormalizeSpec
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe

RUNS = 3


def plain(src: Path, dst: Path) -> None:
    subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(src)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "pcm_s16le",
            str(dst),
        ],
        check=True,
    )


def ours(src: Path, dst: Path) -> None:
    result = probe(src, MediaLimits())
    normalize(src, dst, result, NormalizeSpec())


def best(fn, src: Path, dst: Path) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn(src, dst)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    files = [(m, f, speech_minutes(m, f)) for m in (0.1, 3, 60) for f in ("wav", "mp3", "m4a")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.wav"
        for minutes, fmt, src in files:
            a = best(plain, src, dst)
            b = best(ours, src, dst)
            hours = minutes / 60
            rows.append((f"{minutes:g} min {fmt}", a / hours, b / hours, b / a))
    print(f"{'input':<14} {'plain s/audio-h':>16} {'bulkscribe s/audio-h':>21} {'ratio':>7}")
    for name, a, b, r in rows:
        print(f"{name:<14} {a:>16.2f} {b:>21.2f} {r:>7.3f}")
    total_plain = sum(a * m / 60 for (_, a, _, _), (m, _, _) in zip(rows, files, strict=True))
    total_ours = sum(b * m / 60 for (_, _, b, _), (m, _, _) in zip(rows, files, strict=True))
    print(f"{'all files':<14} {'':>16} {'':>21} {total_ours / total_plain:>7.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
