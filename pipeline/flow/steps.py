"""The steps that move an item through its life, shared by both drivers.

Each step claims the item by compare-and-set, does one stage's work, and records the next
state; a step that loses the race returns without doing anything. Failures go through
:func:`pipeline.flow.guard.handle_failure`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from structlog.contextvars import bound_contextvars

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import after_prepare
from pipeline.flow.admission import admit_batch, parked_until
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.media import to_flac
from pipeline.ledger import ItemRow
from pipeline.ledger.repo import add_timing, attempt_end
from pipeline.log import get_logger
from pipeline.manifest import display
from pipeline.models import NormalizedAudio, ProbeResult
from pipeline.stages.persist import build_document
from pipeline.stages.prepare import PrepareContext, SourceSpec, prepare
from pipeline.stages.transcribe import transcribe_file
from pipeline.states import ItemState
from pipeline.transcript import Transcript

log = get_logger("bulkscribe.flow")


def claim(ctx: FlowContext, row: ItemRow, old: ItemState, new: ItemState,
          **values: Any) -> ItemRow | None:
    return ctx.ledger.claim(row.id, old, new, owner=ctx.owner, lease_s=ctx.lease_s, **values)


@contextmanager
def keep_alive(ctx: FlowContext, row: ItemRow) -> Iterator[None]:
    """Renew the claim's lease while a long step runs (an hour-long file, a slow upload), so
    the sweeper never mistakes a busy worker for a dead one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(ctx.lease_s / 3):
            if not ctx.ledger.renew(row.id, row.state, owner=ctx.owner, lease_s=ctx.lease_s):
                return

    thread = threading.Thread(target=beat, name=f"lease-{row.key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def advance(ctx: FlowContext, row: ItemRow, new: ItemState, **values: Any) -> bool:
    """Leave a claimed state; False means the claim was lost (lease expired and re-taken)."""
    values.setdefault("next_run_at", None)
    ok = ctx.ledger.move(row.id, row.state, new, owner=ctx.owner, tries=0, **values)
    if not ok:
        log.warning("item.claim_lost", item_id=row.key, state=row.state.value)
    return ok


def prepare_step(ctx: FlowContext, row: ItemRow) -> ItemRow | None:
    """PENDING → PREPARED: probe, normalize, keep the audio where the next step finds it.

    The item as it now stands once PREPARED, else None.
    """
    claimed = claim(ctx, row, ItemState.PENDING, ItemState.PREPARING)
    if claimed is None:
        return None
    workdir = ctx.workdir(claimed)
    with bound_contextvars(batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt,
                           stage="prepare"), \
            keep_alive(ctx, claimed):
        try:
            info = ctx.info(claimed)
            spec = claimed.spec
            t0 = time.monotonic()
            prepared = prepare(
                # The ledger's source column is the one place the fetchable URL is kept.
                SourceSpec(claimed.source, spec.get("start_s"),
                           spec.get("end_s"), spec.get("channel")),
                workdir,
                PrepareContext(limits=info.limits, http=ctx.http, objects=ctx.objects,
                               download=ctx.download, prober=ctx.prober,
                               normalizer=ctx.normalizer),
            )
            audio_path = to_flac(prepared.audio.path) if info.mode is Mode.ASYNC \
                else prepared.audio.path
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
            facts = prepared.probe.as_dict() | {"offset_s": prepared.audio.offset_s,
                                                "normalized_s": prepared.audio.duration_s}
            parked = parked_until(ctx, claimed)  # a batch with caps: wait for admission
            values: dict[str, Any] = dict(
                media_key=key, probe=facts, error_code=None, error_message=None,
                audio_duration_ms=int(round(prepared.audio.duration_s * 1000)),
                timings=add_timing(claimed.timings, "prepare", seconds),
                next_run_at=parked or ctx.due_at(claimed, after_prepare(info.mode), 0.0))
            if advance(ctx, claimed, ItemState.PREPARED, **values):
                log.info("prepare.done", duration_s=round(prepared.probe.duration_s, 3),
                         codec=prepared.probe.codec, seconds=round(seconds, 3))
                if parked is not None:
                    admit_batch(ctx, claimed.batch_id)
                    return None  # admitted or not, the ledger now says what is next
                # The item as it now stands: the caller need not read it back.
                return replace(claimed, state=ItemState.PREPARED, lease_owner=None,
                               lease_until=None, tries=0, **values)
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return None


def transcribe_step(ctx: FlowContext, row: ItemRow) -> bool:
    """PREPARED → SUCCEEDED for clip engines (local faster-whisper, sync DashScope).
    True once the item is SUCCEEDED."""
    claimed = claim(ctx, row, ItemState.PREPARED, ItemState.TRANSCRIBING)
    if claimed is None:
        return False
    workdir = ctx.workdir(claimed)
    with bound_contextvars(batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt,
                           stage="transcribe"), \
            keep_alive(ctx, claimed):
        try:
            facts = dict(claimed.probe or {})
            path = ctx.media.local(str(claimed.media_key), workdir)
            audio = NormalizedAudio(path, float(facts.get("normalized_s", 0.0)),
                                    offset_s=float(facts.get("offset_s", 0.0)))
            channel = claimed.spec.get("channel") or 0
            t0 = time.monotonic()
            transcript = transcribe_file(audio, ctx.clip_engine(ctx.info(claimed)),
                                         ctx.asr_options(claimed), channel_id=channel)
            seconds = time.monotonic() - t0
            ctx.emit("stage.done", stage="transcribe", seconds=seconds)
            done = finish(ctx, claimed, [transcript],
                          timings=add_timing(claimed.timings, "transcribe", seconds))
            log.info("transcribe.done", seconds=round(seconds, 3),
                     sentences=len(transcript.sentences))
            return done
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return False


def finish(ctx: FlowContext, claimed: ItemRow, transcripts: Sequence[Transcript], *,
           timings: dict[str, float] | None = None) -> bool:
    """Write the outputs and mark the item SUCCEEDED; drop audio nobody else needs.
    False if the claim was lost on the way."""
    probe = ProbeResult.from_dict(dict(claimed.probe or {}))
    source = str(claimed.spec.get("source") or claimed.source)
    document = build_document(display(source), probe, transcripts)
    t0 = time.monotonic()
    outputs = ctx.sinks(claimed.batch_id).write(claimed.key, document, transcripts, ctx.formats)
    timings = add_timing(timings or claimed.timings, "persist", time.monotonic() - t0)
    if advance(ctx, claimed, ItemState.SUCCEEDED, outputs=outputs, error_code=None,
               error_message=None, error_detail=None, timings=timings,
               attempt=attempt_end(ItemState.SUCCEEDED, timings=timings)):
        ctx.emit("item.succeeded")
        if claimed.media_key:
            with ctx.ledger.media_guard(claimed.media_key) as users:
                if users() == 0:
                    ctx.media.forget(claimed.media_key)
        return True
    return False
