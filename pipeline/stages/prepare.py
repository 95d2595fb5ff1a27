"""Prepare: fetch the source, probe it, normalize it into the item's work directory.

The same function serves the embedded runner and the ``prepare`` Celery queue; the probe and
normalize steps are injected so tests can interpose on them (a file that vanishes between
the two, say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pipeline.inputs.manifest import display
from pipeline.inputs.netguard import AddressPolicy
from pipeline.inputs.sources import ObjectReader, fetch
from pipeline.models import MediaLimits, NormalizedAudio, NormalizeSpec, ProbeResult
from pipeline.settings import DownloadSettings
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe


@dataclass(frozen=True, slots=True)
class PrepareContext:
    limits: MediaLimits
    http: Callable[[], httpx.Client]
    spec: NormalizeSpec = field(default_factory=NormalizeSpec)
    objects: ObjectReader | None = None
    download: DownloadSettings = field(default_factory=DownloadSettings)
    prober: Callable[..., ProbeResult] = field(default=probe)
    normalizer: Callable[..., NormalizedAudio] = field(default=normalize)


@dataclass(frozen=True, slots=True)
class Prepared:
    probe: ProbeResult
    audio: NormalizedAudio


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """The part of an item that says what audio to take."""

    source: str
    start_s: float | None = None
    end_s: float | None = None
    channel: int | None = None


def prepare(spec: SourceSpec, workdir: Path, ctx: PrepareContext) -> Prepared:
    """Probe and normalize one source into ``workdir/audio.wav`` (made only when needed: a
    missing or rejected file costs no directory)."""
    label = display(spec.source)
    local = fetch(
        spec.source,
        workdir,
        max_bytes=ctx.limits.max_bytes,
        http=ctx.http,
        objects=ctx.objects,
        deadline_s=ctx.download.deadline_s,
        policy=AddressPolicy(allow_private=ctx.download.allow_private),
    )
    try:
        probed = ctx.prober(local.path, ctx.limits, channel=spec.channel, name=label)
        workdir.mkdir(parents=True, exist_ok=True)
        audio = ctx.normalizer(
            local.path,
            workdir / "audio.wav",
            probed,
            ctx.spec,
            start_s=spec.start_s,
            end_s=spec.end_s,
            channel=spec.channel,
            name=label,
            max_bytes=ctx.limits.max_scratch_bytes,
        )
    finally:
        if local.temporary:
            local.path.unlink(missing_ok=True)
    return Prepared(probed, audio)
