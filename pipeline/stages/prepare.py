"""Prepare: fetch the source, probe it, normalize it into the item's work directory.

The same function serves the embedded runner and the ``prepare`` Celery queue; the probe and
normalize steps are injected so tests can interpose on them (a file that vanishes between
the two, say).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from structlog.contextvars import bound_contextvars

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import after_prepare
from pipeline.flow.admission import admit_batch, parked_until
from pipeline.flow.claims import advance, claim, keep_alive
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.media import to_flac
from pipeline.inputs.manifest import display
from pipeline.inputs.netguard import AddressPolicy
from pipeline.inputs.sources import ObjectReader, fetch
from pipeline.ledger import ItemRow
from pipeline.ledger.repo import ItemColumns, add_timing, item_params
from pipeline.log import get_logger
from pipeline.models import MediaLimits, NormalizedAudio, NormalizeSpec, ProbeResult
from pipeline.settings import DownloadSettings
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe
from pipeline.states import ItemState


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


log = get_logger("bulkscribe.flow")


def prepare_step(ctx: FlowContext, row: ItemRow) -> ItemRow | None:
    """PENDING → PREPARED: probe, normalize, keep the audio where the next step finds it.

    The item as it now stands once PREPARED, else None.
    """
    claimed = claim(ctx, row, ItemState.PENDING, ItemState.PREPARING)
    if claimed is None:
        return None
    workdir = ctx.workdir(claimed)
    with (
        bound_contextvars(
            batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt, stage="prepare"
        ),
        keep_alive(ctx, claimed),
    ):
        try:
            info = ctx.rules.info(claimed)
            request = claimed.request
            t0 = time.monotonic()
            prepared = prepare(
                # The ledger's source column is the one place the fetchable URL is kept.
                SourceSpec(claimed.source, request.start_s, request.end_s, request.channel),
                workdir,
                PrepareContext(
                    limits=info.limits,
                    http=ctx.http,
                    objects=ctx.objects,
                    download=ctx.rules.download,
                    prober=ctx.prober,
                    normalizer=ctx.normalizer,
                ),
            )
            audio_path = (
                to_flac(prepared.audio.path) if info.mode is Mode.ASYNC else prepared.audio.path
            )
            key = ctx.media.key_for(audio_path)
            with ctx.ledger.media_guard(key):
                # Identical audio is stored once and deleted by the last item to finish
                # with it (see finish()). Recording the key before looking for the object
                # makes this item a user of it first, so it cannot be deleted between
                # "already stored, skip the upload" and PREPARED.
                ctx.ledger.update_if(row.id, ItemState.PREPARING, media_key=key)
                ctx.media.keep(audio_path, key)
            seconds = time.monotonic() - t0
            ctx.emit("stage.done", stage="prepare", seconds=seconds)
            facts = prepared.probe.as_dict() | {
                "offset_s": prepared.audio.offset_s,
                "normalized_s": prepared.audio.duration_s,
            }
            parked = parked_until(ctx, claimed)  # a batch with caps: wait for admission
            values: ItemColumns = dict(
                media_key=key,
                probe=facts,
                failure=None,
                audio_duration_ms=int(round(prepared.audio.duration_s * 1000)),
                timings=add_timing(claimed.timings, "prepare", seconds),
                next_run_at=parked or ctx.due_at(claimed, after_prepare(info.mode), 0.0),
            )
            if advance(ctx, claimed, ItemState.PREPARED, **values):
                log.info(
                    "prepare.done",
                    duration_s=round(prepared.probe.duration_s, 3),
                    codec=prepared.probe.codec,
                    seconds=round(seconds, 3),
                )
                if parked is not None:
                    admit_batch(ctx, claimed.batch_id)
                    return None  # admitted or not, the ledger now says what is next
                # The item as it now stands: the caller need not read it back.
                return replace(
                    claimed,
                    state=ItemState.PREPARED,
                    lease_owner=None,
                    lease_until=None,
                    tries=0,
                    **item_params(values),
                )
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return None
