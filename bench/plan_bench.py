"""A cold `bulkscribe plan` of 1,000 short WAVs vs ffprobe run once per file, in one run.

The files (0.5-3 s, 8-48 kHz, mono and stereo, 16- and 24-bit PCM and 32-bit float, a few
with extra RIFF chunks, and ten bad ones: text, truncated, empty) are written with the
`wave` module. Three timings, each of the whole command:
  ffprobe per file:  `ffprobe -show_format -show_streams -of json` on each file in turn
  plan, cold:        `bulkscribe plan DIR --json`, empty probe cache
  plan, warm:        the same again (every file answered from the cache)
Prints a table row: seconds and the cold plan's ratio to ffprobe per file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

N = int(os.environ.get("PLAN_BENCH_FILES", "1000"))
BULKSCRIBE = Path(sys.executable).with_name("bulkscribe")


def write_files(root: Path, n: int) -> None:
    rates = (8000, 16000, 22050, 44100, 48000)
    for i in range(n - 10):
        rate = rates[i % len(rates)]
        channels = 1 + i % 2
        frames = int(rate * (0.5 + (i % 6) * 0.5))
        path = root / f"f{i:04d}.wav"
        if i % 7 == 3:  # 32-bit float: WAVE_FORMAT_IEEE_FLOAT, written by hand
            _float_wav(path, rate, channels, frames)
            continue
        width = 3 if i % 11 == 5 else 2
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(width)
            w.setframerate(rate)
            w.writeframes(bytes(frames * channels * width))
        if i % 13 == 0:  # a LIST chunk after the data, as many editors write
            with path.open("ab") as f:
                f.write(b"LIST" + struct.pack("<I", 12) + b"INFOISFT" + struct.pack("<I", 0))
    bad = root / "bad"
    bad.mkdir()
    for i in range(10):
        p = bad / f"bad{i}.wav"
        if i < 4:
            p.write_text("not audio at all\n")
        elif i < 7:
            good = root / f"f{i:04d}.wav"
            p.write_bytes(good.read_bytes()[:30])  # truncated header
        else:
            p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # header cut in the middle


def _float_wav(path: Path, rate: int, channels: int, frames: int) -> None:
    data = bytes(frames * channels * 4)
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        root = Path(tmp) / "media"
        root.mkdir()
        write_files(root, N)
        files = sorted(p for p in root.rglob("*.wav"))
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        start = time.perf_counter()
        for p in files:
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(p)],
                capture_output=True,
                check=False,
            )
        per_file = time.perf_counter() - start
        cold, out = timed([str(BULKSCRIBE), "plan", str(root), "--json"], env)
        warm, out2 = timed([str(BULKSCRIBE), "plan", str(root), "--json"], env)
        plan, again = json.loads(out), json.loads(out2)
        assert plan["files"] == len(files) and plan["audio_seconds"] == again["audio_seconds"]
        print(
            f"files {plan['files']}, bad {len(plan['bad'])}, "
            f"audio {plan['audio_seconds']:.1f} s, probes {plan['probes']}, cpus {os.cpu_count()}"
        )
        print("| files | ffprobe per file | plan, cold | plan, warm | cold / per file |")
        print("|---|---|---|---|---|")
        print(
            f"| {len(files)} | {per_file:.1f} s | {cold:.1f} s | {warm:.1f} s "
            f"| {cold / per_file:.2f}× |"
        )


if __name__ == "__main__":
    main()
