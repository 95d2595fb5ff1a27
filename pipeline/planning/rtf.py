"""This machine's real-time factor for the local engine: seconds of work per audio second.

`bulkscribe plan` needs it to say how long a local run will take. In order:

1. ``plan.local_rtf`` in the settings (``BULKSCRIBE_PLAN__LOCAL_RTF``), when set;
2. a value measured earlier on this machine for the same model and engine settings, kept in
   ``$XDG_CACHE_HOME/bulkscribe/rtf.json`` (``~/.cache/...``);
3. a measurement now: the model is loaded and transcribes about 10 s of speech (spoken by
   espeak-ng when it is installed, else a synthetic warble) twice; the second, warm pass is
   timed. About as long as loading the model, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.settings import Settings

_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
    "background. It is easy to tell the depth of a well."
)


@dataclass(frozen=True, slots=True)
class Rtf:
    value: float  # seconds of processing per second of audio, one worker
    how: str  # where the number comes from, for the plan's output


def rtf_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bulkscribe" / "rtf.json"


def cache_key(settings: Settings, model: str) -> str:
    loc = settings.local
    return f"{model}|{loc.device}|{loc.compute_type}|beam{loc.beam_size}|vad{int(loc.vad_filter)}"


def local_rtf(settings: Settings, model: str) -> Rtf:
    if settings.plan.local_rtf is not None:
        return Rtf(settings.plan.local_rtf, "plan.local_rtf setting")
    path = rtf_cache_path()
    key = cache_key(settings, model)
    cached = _read(path)
    if key in cached:
        entry = cached[key]
        return Rtf(float(str(entry["rtf"])), f"measured {entry['at']}, cached in {path}")
    value = measure(settings, model)
    cached = _read(path)  # another plan may have written meanwhile
    cached[key] = {"rtf": value, "at": time.strftime("%Y-%m-%d", time.gmtime())}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    return Rtf(value, f"measured now, cached in {path}")


def measure(settings: Settings, model: str) -> float:
    from pipeline.asr.base import AudioClip
    from pipeline.asr.local import LocalEngine
    from pipeline.models import AsrOptions

    samples = _speech()
    clip = AudioClip(samples)
    engine = LocalEngine(model, settings.local, concurrency=1)
    engine.transcribe(clip, AsrOptions())  # load and warm up
    t0 = time.perf_counter()
    engine.transcribe(clip, AsrOptions())
    return max(1e-4, (time.perf_counter() - t0) / clip.duration_s)


def _speech() -> np.ndarray:
    """About 10 s of 16 kHz mono int16 audio."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            done = subprocess.run(
                [espeak, "-w", str(wav), _TEXT], capture_output=True, timeout=60, check=False
            )
            if done.returncode == 0 and wav.is_file():
                with wave.open(str(wav)) as w:
                    raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                    rate = w.getframerate()
                if rate != 16_000 and len(raw):  # espeak-ng speaks at 22.05 kHz
                    idx = np.arange(0, len(raw), rate / 16_000).astype(int)
                    raw = raw[idx[idx < len(raw)]]
                if len(raw) > 16_000:
                    return raw.astype(np.int16)
    t = np.arange(10 * 16_000) / 16_000
    tone = np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 3 * t)) * t)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
    return (tone * envelope * 8000).astype(np.int16)


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
