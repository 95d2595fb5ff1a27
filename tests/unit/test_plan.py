"""Unit tests for pipeline.planning.plan (adding up a plan, wall time),
pipeline.planning.pricing and pipeline.planning.probe_cache (ffprobe reports cached by path,
size and mtime)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError, FailureCode, MediaRejected
from pipeline.media import MediaCommandError
from pipeline.models import MediaLimits
from pipeline.planning.plan import ModelTotal, Probed, Walls, make_plan
from pipeline.planning.pricing import budget_caps, rate_of
from pipeline.planning.probe_cache import ProbeCache, cache_path_for
from pipeline.settings import Settings
from pipeline.stages.probe import probe

WAV = {
    "streams": [
        {
            "codec_type": "audio",
            "codec_name": "pcm_s16le",
            "channels": 1,
            "sample_rate": "16000",
            "duration": "2.5",
        }
    ],
    "format": {"format_name": "wav", "duration": "2.5"},
}


def rates(model: str) -> tuple[float | None, str | None]:
    return {"fun-asr": (0.0001, "USD"), "tiny.en": (0.0, None)}.get(model, (None, None))


def test_make_plan_adds_up_per_model_with_cost_or_unknown() -> None:
    """Audio per model, cost where a price is known (None where not), bad and remote
    items counted, largest first."""
    probed = [
        Probed("a", "/a", "fun-asr", 100.0, 10),
        Probed("b", "/b", "fun-asr", 300.0, 30),
        Probed("c", "/c", "paraformer-v2", 50.0, 5),
        Probed("d", "/d", "fun-asr", error=("not_media", "d is text")),
        Probed("e", "https://h/e.wav", "fun-asr", remote=True),
    ]
    plan = make_plan(probed, rates, lambda by: 42.0, top=2)
    data = plan.as_json()
    assert data["files"] == 5 and data["not_probed"] == 1 and data["audio_seconds"] == 450.0
    assert data["bad"] == [{"id": "d", "code": "not_media", "message": "d is text"}]
    assert data["by_model"] == {
        "fun-asr": {"files": 2, "audio_seconds": 400.0, "cost": 0.04, "currency": "USD"},
        "paraformer-v2": {"files": 1, "audio_seconds": 50.0, "cost": None, "currency": None},
    }
    assert data["estimated_wall_s"] == 42.0
    assert [x["id"] for x in data["largest"]] == ["b", "a"]


def test_walls_local_by_rtf_and_provider_by_rounds_of_the_concurrency_cap() -> None:
    """Local: audio x RTF / workers. Provider: ceil(files / max_inflight) rounds of the
    model's typical latency."""
    walls = Walls(
        local_rtf=lambda m: 0.1,
        is_local=lambda m: m == "tiny.en",
        workers=2,
        max_inflight=200,
        latency_s={"fun-asr": 90.0},
        default_latency_s=60.0,
    )
    assert walls({"tiny.en": ModelTotal(10, 3600.0, 0.0, None)}) == pytest.approx(180.0)
    assert walls({"fun-asr": ModelTotal(401, 1e6, None, None)}) == pytest.approx(3 * 90.0)
    assert walls({"qwen3-asr-flash-filetrans": ModelTotal(5, 10.0, None, None)}) == 60.0
    unknown = Walls(local_rtf=lambda m: None, is_local=lambda m: True, workers=2, max_inflight=1)
    assert unknown({"tiny.en": ModelTotal(1, 10.0, 0.0, None)}) is None  # model cannot load


def test_prices_from_settings_and_cost_cap_needs_them() -> None:
    """[prices] gives per-second rates (per_hour converted); local models cost 0; a cost
    cap over a model without a price is a configuration error."""
    s = Settings(prices={"fun-asr": {"per_hour": 0.36, "currency": "USD"}})
    assert rate_of(s, "dashscope", "fun-asr") == (pytest.approx(0.0001), "USD")
    assert rate_of(s, "dashscope", "paraformer-v2") == (None, None)
    assert rate_of(s, "local", "tiny.en") == (0.0, None)
    caps, currency = budget_caps(s, "dashscope", ["fun-asr"], max_cost=5.0)
    assert caps.max_cost == 5.0 and currency == "USD"
    with pytest.raises(ConfigError, match="paraformer-v2"):
        budget_caps(s, "dashscope", ["fun-asr", "paraformer-v2"], max_cost=5.0)
    hours, _ = budget_caps(Settings(budget={"max_audio_hours": 2}), "local", ["tiny.en"])
    assert hours.max_audio_s == 7200.0  # the setting when no flag is given


def test_a_price_needs_exactly_one_rate() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Settings(prices={"fun-asr": {"currency": "USD"}})


class Counting:
    """A ReportSource standing in for ffprobe: counts calls, can fail like it."""

    def __init__(self, fail: MediaCommandError | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, path: Path, st: os.stat_result) -> Mapping[str, Any]:
        with self.lock:
            self.calls += 1
        if self.fail is not None:
            raise self.fail
        return WAV


def test_probe_cache_answers_again_until_the_file_changes(tmp_path: Path) -> None:
    """The second probe of an unchanged file does not run ffprobe; a new mtime does."""
    f = tmp_path / "a.wav"
    f.write_bytes(b"x" * 100)
    source = Counting()
    cache = ProbeCache(tmp_path / "probe.db", source)
    limits = MediaLimits()
    assert probe(f, limits, reports=cache.reports).duration_s == 2.5
    assert probe(f, limits, reports=cache.reports).duration_s == 2.5
    assert (source.calls, cache.hits, cache.ran) == (1, 1, 1)
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    probe(f, limits, reports=cache.reports)
    assert source.calls == 2
    # Another process (another cache object on the same file) sees the stored report.
    other = ProbeCache(tmp_path / "probe.db", Counting())
    probe(f, limits, reports=other.reports)
    assert other.hits == 1 and other.ran == 0


def test_probe_cache_keeps_reports_not_verdicts(tmp_path: Path) -> None:
    """Limits apply afresh on each use: a cached 2.5 s report is too_long under a 2 s limit."""
    f = tmp_path / "a.wav"
    f.write_bytes(b"x" * 100)
    cache = ProbeCache(tmp_path / "probe.db", Counting())
    probe(f, MediaLimits(), reports=cache.reports)
    with pytest.raises(MediaRejected) as err:
        probe(f, MediaLimits(max_duration_s=2.0), reports=cache.reports)
    assert err.value.code is FailureCode.TOO_LONG


def test_probe_cache_keeps_ffprobe_failures_but_not_timeouts(tmp_path: Path) -> None:
    """A file ffprobe cannot read is not_media again from the cache; a timeout is retried."""
    f = tmp_path / "notes.wav"
    f.write_bytes(b"hello")
    bad = Counting(MediaCommandError(["ffprobe"], 1, "Invalid data found when processing input"))
    cache = ProbeCache(tmp_path / "probe.db", bad)
    for _ in range(2):
        with pytest.raises(MediaRejected) as err:
            probe(f, MediaLimits(), reports=cache.reports)
        assert err.value.code is FailureCode.NOT_MEDIA
    assert bad.calls == 1
    slow = Counting(MediaCommandError(["ffprobe"], None, ""))
    g = tmp_path / "slow.wav"
    g.write_bytes(b"x")
    cache2 = ProbeCache(tmp_path / "probe.db", slow)
    for _ in range(2):
        with pytest.raises(MediaRejected):
            probe(g, MediaLimits(), reports=cache2.reports)
    assert slow.calls == 2


def test_probe_cache_is_safe_across_threads(tmp_path: Path) -> None:
    """Sixteen threads probing 200 files through one cache: each file probed once."""
    files = []
    for n in range(200):
        f = tmp_path / f"f{n}.wav"
        f.write_bytes(b"x" * (n + 1))
        files.append(f)
    source = Counting()
    cache = ProbeCache(tmp_path / "probe.db", source)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: probe(p, MediaLimits(), reports=cache.reports), files * 2))
    assert source.calls <= 400 and cache.hits + cache.ran == 400
    assert ProbeCache(tmp_path / "probe.db", Counting()).reports(files[7], files[7].stat())


def test_cache_path_prefers_the_output_dirs_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    out = tmp_path / "out"
    assert cache_path_for(out) == tmp_path / "xdg" / "bulkscribe" / "probe.db"
    (out / ".bulkscribe").mkdir(parents=True)
    (out / ".bulkscribe" / "probe.db").write_bytes(b"")
    assert cache_path_for(out) == out / ".bulkscribe" / "probe.db"
