"""Generate a small demo archive (speech from espeak-ng) and its manifest.

``python -m pipeline.demo DIR`` writes a WAV, a stereo MP3, an AAC file to be trimmed and an
MP4 video under DIR/media, plus DIR/manifest.jsonl naming them. ``make run`` transcribes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HARVARD = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def _speak(text: str, dest: Path) -> None:
    _run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(dest), text])


def _ffmpeg(*args: str) -> None:
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args])


def make_demo(root: Path) -> Path:
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run `make deps` (apt-get install {tool})")
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    raw = media / "raw.wav"

    _speak(" ".join(HARVARD[0:3]), media / "welcome.wav")

    _speak(" ".join(HARVARD[3:6]), raw)
    _ffmpeg(
        "-i",
        str(raw),
        "-ac",
        "2",
        "-ar",
        "44100",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "96k",
        str(media / "interview.mp3"),
    )

    _speak(" ".join(HARVARD[6:10]), raw)
    _ffmpeg("-i", str(raw), "-c:a", "aac", "-b:a", "64k", str(media / "lecture.m4a"))

    _speak("Video files work too: only the sound track is transcribed.", raw)
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10",
        "-i",
        str(raw),
        "-shortest",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(media / "clip.mp4"),
    )
    raw.unlink()

    entries = [
        {"id": "welcome", "source": "media/welcome.wav", "language": "en"},
        {"id": "interview", "source": "media/interview.mp3"},
        # Only the part from 2.5 s on; the transcript's times still count from the file start.
        {"id": "lecture-part", "source": "media/lecture.m4a", "start_s": 2.5},
        {"id": "clip", "source": "media/clip.mp4"},
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    path = make_demo(target)
    sys.stderr.write(f"demo manifest: {path}\n")
