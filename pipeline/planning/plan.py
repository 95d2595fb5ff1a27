"""`bulkscribe plan`: what a run of these INPUTs would involve, without running it.

:func:`probe_all` (the shell) probes every local item in a thread pool, through the same
probe stage and limits `run` uses, so a bad file gets the code `run` would give it; remote
sources are not downloaded, only counted. :func:`make_plan` (pure) adds it up: audio per
model, cost from the price table, wall time from an injected estimator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.asr.catalog import model_info
from pipeline.errors import PipelineError, failure_of
from pipeline.inputs.batches import seeds_for
from pipeline.inputs.manifest import display
from pipeline.inputs.sources import local_path
from pipeline.models import ManifestItem, ManifestProblem
from pipeline.settings import LimitsSettings
from pipeline.stages.normalize import check_trim
from pipeline.stages.probe import ReportSource, ffprobe_report, probe


@dataclass(frozen=True, slots=True)
class Probed:
    """One item as the plan sees it."""

    id: str | None  # None for a manifest line too broken to have one (as in results.jsonl)
    source: str
    model: str
    seconds: float | None = None  # audio to transcribe (trimmed); None: bad or not probed
    size_bytes: int = 0
    error: tuple[str, str] | None = None  # (code, message)
    remote: bool = False  # http(s)/s3/oss: not downloaded, not probed


@dataclass(frozen=True, slots=True)
class ModelTotal:
    files: int
    audio_s: float
    cost: float | None  # None: no price for this model
    currency: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    files: int
    bad: tuple[Probed, ...]
    remote: tuple[Probed, ...]  # not downloaded, not probed
    audio_s: float
    by_model: Mapping[str, ModelTotal]
    wall_s: float | None
    largest: tuple[Probed, ...]
    notes: tuple[str, ...] = ()

    @property
    def not_probed(self) -> int:
        return len(self.remote)

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bad": [
                {"id": p.id, "code": p.error[0], "message": p.error[1]} for p in self.bad if p.error
            ],
            "not_probed": self.not_probed,
            "audio_seconds": round(self.audio_s, 3),
            "by_model": {
                m: {
                    "files": t.files,
                    "audio_seconds": round(t.audio_s, 3),
                    "cost": None if t.cost is None else round(t.cost, 6),
                    "currency": t.currency,
                }
                for m, t in self.by_model.items()
            },
            "estimated_wall_s": None if self.wall_s is None else round(self.wall_s, 1),
            "largest": [
                {
                    "id": p.id,
                    "audio_seconds": round(p.seconds or 0.0, 3),
                    "size_bytes": p.size_bytes,
                }
                for p in self.largest
            ],
        }


Rates = Callable[[str], tuple[float | None, str | None]]  # model -> (per second, currency)
WallEstimator = Callable[[Mapping[str, "ModelTotal"]], float | None]


def make_plan(
    probed: Sequence[Probed],
    rates: Rates,
    wall: WallEstimator,
    *,
    top: int = 5,
    notes: Sequence[str] = (),
) -> Plan:
    """Add up probed items. Pure."""
    good = [p for p in probed if p.seconds is not None]
    by_model: dict[str, ModelTotal] = {}
    for model in dict.fromkeys(p.model for p in good):
        mine = [p for p in good if p.model == model]
        seconds = sum(p.seconds or 0.0 for p in mine)
        rate, currency = rates(model)
        by_model[model] = ModelTotal(
            len(mine), seconds, None if rate is None else seconds * rate, currency
        )
    largest = sorted(good, key=lambda p: (-(p.seconds or 0.0), p.id or ""))[:top]
    return Plan(
        files=len(probed),
        bad=tuple(p for p in probed if p.error),
        remote=tuple(p for p in probed if p.remote),
        audio_s=sum(t.audio_s for t in by_model.values()),
        by_model=by_model,
        wall_s=wall(by_model) if by_model else 0.0,
        largest=tuple(largest),
        notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class Walls:
    """How long each model's share takes: local models by the measured real-time factor
    over the run's workers; provider models as rounds of ``max_inflight`` tasks of a
    typical latency each. Shares run one after another (an upper bound)."""

    local_rtf: Callable[[str], float | None]  # model -> work s per audio s; None: unknown
    is_local: Callable[[str], bool]
    workers: int
    max_inflight: int
    latency_s: Mapping[str, float] = field(default_factory=dict)
    default_latency_s: float = 60.0

    def __call__(self, by_model: Mapping[str, ModelTotal]) -> float | None:
        total = 0.0
        for model, t in by_model.items():
            if self.is_local(model):
                rtf = self.local_rtf(model)
                if rtf is None:
                    return None
                total += t.audio_s * rtf / max(1, self.workers)
            else:
                rounds = math.ceil(t.files / max(1, self.max_inflight))
                total += rounds * self.latency_s.get(model, self.default_latency_s)
        return total


def probe_threads(cpus: int | None = None) -> int:
    """Probes at once: two per CPU (an ffprobe is mostly its own start-up, CPU-bound; the
    second hides a slow disk's reads), at most 32."""
    return max(2, min(32, 2 * (cpus or os.cpu_count() or 1)))


def probe_all(
    entries: Sequence[ManifestItem | ManifestProblem],
    *,
    engine: str,
    model: str,
    language: str | None,
    limits: LimitsSettings,
    reports: ReportSource = ffprobe_report,
    threads: int | None = None,
) -> list[Probed]:
    """Every entry probed (local files) or set aside (remote, bad lines), in input order,
    on ``threads`` threads (default :func:`probe_threads`). Refusals `run` would make
    before probing (bad manifest lines, duplicate ids, unsupported options) come from the
    same code `run` uses."""
    seeds = seeds_for(entries, engine=engine, model=model, language=language)

    def one(pair: tuple[ManifestItem | ManifestProblem, Any]) -> Probed:
        entry, seed = pair
        if seed.failure is not None or isinstance(entry, ManifestProblem):
            code, message = seed.failure or (entry.code, entry.message)  # type: ignore[union-attr]
            return Probed(entry.item_id, display(seed.source), model, error=(code, message))
        item_id = entry.item_id
        item_model = entry.model or model
        shown = display(entry.source)
        path = local_path(entry.source)
        if path is None:
            return Probed(item_id, shown, item_model, remote=True)
        try:
            info = model_info(engine, item_model, limits)
            result = probe(path, info.limits, channel=entry.channel, name=shown, reports=reports)
            seconds = check_trim(result, entry.start_s, entry.end_s, shown)
        except PipelineError as exc:
            return Probed(item_id, shown, item_model, error=failure_of(exc))
        return Probed(item_id, shown, item_model, seconds=seconds, size_bytes=result.size_bytes)

    with ThreadPoolExecutor(max(1, threads or probe_threads()), thread_name_prefix="plan") as pool:
        return list(pool.map(one, zip(entries, seeds, strict=True)))
