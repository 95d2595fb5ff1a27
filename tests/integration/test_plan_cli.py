"""`bulkscribe plan` end to end: the real CLI, real ffprobe, real files, the probe cache."""

from __future__ import annotations

import json
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e import ffmpeg, log_events, write_jsonl
from support import stream_duration

pytestmark = [pytest.mark.ffmpeg]

Cli = Callable[..., subprocess.CompletedProcess[str]]
FAST = {"BULKSCRIBE_PLAN__LOCAL_RTF": "0.05"}  # no model timing in these tests


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, harvard_wav: Path) -> dict[str, Path]:
    """Good files in four containers and the bad inputs `run` rejects, with a manifest."""
    d = tmp_path_factory.mktemp("plan-archive")
    f: dict[str, Path] = {"speech": harvard_wav}
    f["tone_mp3"] = d / "tone.mp3"
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=2.5",
            "-c:a",
            "libmp3lame",
            str(f["tone_mp3"]),
        ]
    )
    f["tone_m4a"] = d / "tone.m4a"
    ffmpeg(
        ["-f", "lavfi", "-i", "sine=frequency=500:duration=4.2", "-c:a", "aac", str(f["tone_m4a"])]
    )
    f["video"] = d / "clip.mp4"
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x64:rate=10:duration=3",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=3",
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(f["video"]),
        ]
    )
    f["text"] = d / "notes.wav"
    f["text"].write_text("meeting notes, not a recording\n" * 20)
    f["empty"] = d / "empty.wav"
    f["empty"].write_bytes(b"")
    f["silent_video"] = d / "silent.mp4"
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=2:size=64x64:rate=10",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(f["silent_video"]),
        ]
    )
    rows: list[dict[str, Any] | str] = [
        {"id": "speech", "source": str(f["speech"])},
        {"id": "tone-mp3", "source": str(f["tone_mp3"])},
        {"id": "tone-m4a", "source": str(f["tone_m4a"]), "start_s": 1.0, "end_s": 3.0},
        {"id": "video", "source": str(f["video"])},
        {"id": "text", "source": str(f["text"])},
        {"id": "empty", "source": str(f["empty"])},
        {"id": "silent", "source": str(f["silent_video"])},
        {"id": "missing", "source": str(d / "gone.wav")},
        {"id": "late", "source": str(f["tone_m4a"]), "start_s": 99},
        '{"id": "broken", "source": ',
        {"id": "remote", "source": "https://127.0.0.1:9/never/fetched.wav"},
        {"id": "bucket", "source": "s3://archive/tapes/a.wav"},
    ]
    f["manifest"] = write_jsonl(d / "archive.jsonl", rows)
    return f


def plan_json(bulkscribe: Cli, *args: str, env: dict[str, str]) -> dict[str, Any]:
    done = bulkscribe("plan", *args, "--json", env={**FAST, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_plan_totals_match_ffprobe_and_bad_files_have_runs_codes(
    bulkscribe: Cli, archive: dict[str, Path], tmp_path: Path
) -> None:
    """Audio seconds are ffprobe's stream durations (the trimmed item counts its span);
    every bad item has the code `run` gives it; remote sources are counted, not fetched."""
    data = plan_json(
        bulkscribe, str(archive["manifest"]), env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    )
    expected = (
        stream_duration(archive["speech"])
        + stream_duration(archive["tone_mp3"])
        + 2.0
        + stream_duration(archive["video"])
    )
    assert data["audio_seconds"] == pytest.approx(expected, abs=0.002)
    assert set(data) >= {"files", "bad", "audio_seconds", "by_model", "estimated_wall_s"}
    assert data["files"] == 12 and data["not_probed"] == 2
    assert {b["id"]: b["code"] for b in data["bad"]} == {
        "text": "not_media",
        "empty": "empty_audio",
        "silent": "no_audio_stream",
        "missing": "not_found",
        "late": "bad_trim",
        None: "manifest_invalid",
    }
    messages = {b["id"]: b["message"] for b in data["bad"]}
    assert messages[None].startswith("line 10:") and "gone.wav" in messages["missing"]
    tiny = data["by_model"]["tiny.en"]
    assert tiny["files"] == 4 and tiny["audio_seconds"] == pytest.approx(expected, abs=0.002)
    assert tiny["cost"] == 0.0  # the local engine has no provider to pay
    assert data["estimated_wall_s"] == pytest.approx(expected * 0.05 / 2, abs=0.2)
    assert data["largest"][0]["id"] == "speech"
    text = bulkscribe(
        "plan", str(archive["manifest"]), env={**FAST, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    ).stdout
    remote = text.split("not probed (remote, not downloaded):\n", 1)[1].splitlines()[:2]
    assert [line.split()[0] for line in remote] == ["remote", "bucket"]
    assert "  silent  no_audio_stream  " in text


def test_plan_cost_unknown_without_a_price_and_priced_from_settings(
    bulkscribe: Cli, archive: dict[str, Path], tmp_path: Path
) -> None:
    """DashScope models: cost null (and the text says unknown) until [prices] has them;
    wall time from the provider's concurrency cap and the model's typical latency."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    args = (
        str(archive["speech"]),
        str(archive["tone_mp3"]),
        "--engine",
        "dashscope",
        "--model",
        "fun-asr",
    )
    data = plan_json(bulkscribe, *args, env=env)
    assert data["by_model"]["fun-asr"]["cost"] is None
    assert data["estimated_wall_s"] == 60.0  # one round of tasks, the default latency
    text = bulkscribe("plan", *args, env={**FAST, **env}).stdout
    assert "cost unknown" in text
    toml = tmp_path / "prices.toml"
    toml.write_text(
        '[prices]\n"fun-asr" = {per_hour = 0.36, currency = "USD"}\n'
        '[plan]\nprovider_latency_s = {"fun-asr" = 45}\n'
    )
    data = plan_json(bulkscribe, *args, "--config", str(toml), env=env)
    seconds = data["by_model"]["fun-asr"]["audio_seconds"]
    assert data["by_model"]["fun-asr"]["cost"] == pytest.approx(seconds * 0.0001, rel=1e-3)
    assert data["by_model"]["fun-asr"]["currency"] == "USD"
    assert data["estimated_wall_s"] == 45.0


@pytest.mark.model
def test_second_plan_and_following_run_do_not_probe_again(
    bulkscribe: Cli, archive: dict[str, Path], tmp_path: Path
) -> None:
    """A plan fills the probe cache; a second plan answers every file from it, and the
    `run` that follows probes nothing (no probe.ran in its log)."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    inputs = (str(archive["tone_mp3"]), str(archive["video"]), str(archive["text"]))
    first = plan_json(bulkscribe, *inputs, env=env)
    assert first["probes"] == {"cached": 0, "ran": 3, "headers": 0}  # mp3, video, text: ffprobe
    second = plan_json(bulkscribe, *inputs, env=env)
    assert second["probes"] == {"cached": 3, "ran": 0, "headers": 0}
    assert second["audio_seconds"] == first["audio_seconds"]
    out = tmp_path / "out"
    done = bulkscribe("run", *inputs, "--out", str(out), "--json", env=env)
    assert done.returncode == 1, done.stderr  # notes.wav is not media
    assert json.loads(done.stdout)["counts"] == {"SUCCEEDED": 2, "FAILED": 1}
    events = [e["event"] for e in log_events(out)]
    assert "prepare.done" in events and "probe.ran" not in events
    # A plan with --out keeps its cache there, and a run into that directory uses it.
    out2 = tmp_path / "out2"
    plan_json(bulkscribe, str(archive["tone_m4a"]), "--out", str(out2), env=env)
    assert (out2 / ".bulkscribe" / "probe.db").is_file()
    done = bulkscribe("run", str(archive["tone_m4a"]), "--out", str(out2), env=env)
    assert done.returncode == 0, done.stderr
    assert "probe.ran" not in [e["event"] for e in log_events(out2)]


def test_a_directory_of_hundreds_of_files_is_planned_in_seconds(
    bulkscribe: Cli, tmp_path: Path
) -> None:
    """200 short WAVs: read from their headers the first time (no ffprobe start-up, about
    50 ms of CPU each), from the cache in a couple of seconds the second."""
    d = tmp_path / "many"
    for n in range(200):
        sub = d / f"day{n % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        with wave.open(str(sub / f"clip{n:03d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16_000)
            w.writeframes(b"\x01\x00" * (1600 + n))  # 0.1 s and a little more each
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    t0 = time.monotonic()
    cold = plan_json(bulkscribe, str(d), env=env)
    cold_s = time.monotonic() - t0
    t0 = time.monotonic()
    warm = plan_json(bulkscribe, str(d), env=env)
    warm_s = time.monotonic() - t0
    expected = sum(1600 + n for n in range(200)) / 16_000
    assert cold["files"] == warm["files"] == 200 and cold["bad"] == []
    assert warm["audio_seconds"] == pytest.approx(expected, abs=0.01)
    assert cold["probes"] == {"cached": 0, "ran": 0, "headers": 200}  # plain PCM WAV headers
    assert warm["probes"] == {"cached": 200, "ran": 0, "headers": 0}
    assert cold_s < 120, cold_s  # ffprobe start-up bound: 40 s at load average 16 on 2 cores
    assert warm_s < 5, warm_s


@pytest.mark.model
def test_local_real_time_factor_is_measured_once_and_cached(
    bulkscribe: Cli, archive: dict[str, Path], tmp_path: Path
) -> None:
    """Without plan.local_rtf, the first plan times the model on generated speech and keeps
    the factor in the user's cache; the next plan reuses it."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = bulkscribe("plan", str(archive["speech"]), "--json", env=env)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    cached = json.loads((tmp_path / "xdg" / "bulkscribe" / "rtf.json").read_text())
    ((key, entry),) = cached.items()
    assert key.startswith("tiny.en|cpu|int8") and 0 < entry["rtf"] < 5
    assert any("measured now" in n for n in data["notes"])
    assert data["estimated_wall_s"] == pytest.approx(
        data["audio_seconds"] * entry["rtf"] / 2, abs=0.1
    )
    again = json.loads(bulkscribe("plan", str(archive["speech"]), "--json", env=env).stdout)
    assert any("cached in" in n and "measured now" not in n for n in again["notes"])
