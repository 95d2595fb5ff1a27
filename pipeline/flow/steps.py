"""The steps that move an item through its life, shared by both drivers.

Each step claims the item by compare-and-set, does one stage's work, and records the next
state; a step that loses the race returns without doing anything. Failures go through
:func:`pipeline.flow.guard.handle_failure`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Unpack

from structlog.contextvars import bound_contextvars

from pipeline.asr.catalog import Mode
from pipeline.flow.actions import after_prepare
from pipeline.flow.admission import admit_batch, parked_until
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.media import to_flac
from pipeline.flow.outputs import write_item
from pipeline.ledger import AudioFacts, ItemRow
from pipeline.ledger.repo import (
    AttemptColumns,
    ItemColumns,
    add_timing,
    attempt_end,
    item_params,
)
from pipeline.log import get_logger
from pipeline.manifest import display
from pipeline.models import NormalizedAudio, ProbeResult
from pipeline.stages.persist import build_document
from pipeline.stages.prepare import PrepareContext, SourceSpec, prepare
from pipeline.stages.transcribe import transcribe_file
from pipeline.states import ItemState
from pipeline.transcript import Transcript

log = get_logger("bulkscribe.flow")


def claim(
    ctx: FlowContext, row: ItemRow, old: ItemState, new: ItemState, **values: Unpack[ItemColumns]
) -> ItemRow | None:
    return ctx.ledger.claim(row.id, old, new, owner=ctx.owner, lease_s=ctx.lease_s, **values)


class _Renewals:
    """Claims held by steps running in this process, renewed by one thread every third of
    their lease. A thread per step cost more than the whole of a step that fails at once
    (about 1 ms to start one: a tenth of a 100,000-line run of missing files)."""

    def __init__(self) -> None:
        self._tokens = itertools.count()
        self.reset()

    def reset(self) -> None:
        """Fresh state: at start, and in a forked child (Celery prefork), which inherits no
        threads and must not inherit a lock some parent thread held."""
        self._cond = threading.Condition()
        self._held: dict[int, tuple[FlowContext, ItemRow, float]] = {}  # token: when due
        self._wake_at = math.inf  # when the thread looks next
        self._thread: threading.Thread | None = None

    def hold(self, ctx: FlowContext, row: ItemRow) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            due = time.monotonic() + ctx.lease_s / 3
            self._held[token] = (ctx, row, due)
            if due < self._wake_at:  # waking the thread costs a switch: only when needed
                self._wake_at = due
                self._cond.notify()
            return token

    def drop(self, token: int) -> None:
        with self._cond:
            self._held.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(t, c, r) for t, (c, r, at) in self._held.items() if at <= now]
                for token, ctx, row in due:
                    self._held[token] = (ctx, row, now + ctx.lease_s / 3)
                if not due:
                    self._wake_at = min((at for _, _, at in self._held.values()), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
            for token, ctx, row in due:
                with self._cond:
                    if token not in self._held:  # the step ended meanwhile
                        continue
                renewed = False
                with contextlib.suppress(Exception):  # the ledger is briefly unreachable
                    renewed = ctx.ledger.renew(
                        row.id, row.state, owner=ctx.owner, lease_s=ctx.lease_s
                    )
                if not renewed:
                    self.drop(token)


_RENEWALS = _Renewals()
os.register_at_fork(after_in_child=_RENEWALS.reset)


@contextmanager
def keep_alive(ctx: FlowContext, *rows: ItemRow) -> Iterator[None]:
    """Renew the claims' leases every third of ``lease_s`` while a step runs (an hour-long
    file, a slow upload or submission), so the sweeper never mistakes a busy worker for a
    dead one, and a dead worker's claims lapse within ``lease_s``."""
    tokens = [_RENEWALS.hold(ctx, row) for row in rows]
    try:
        yield
    finally:
        for token in tokens:
            _RENEWALS.drop(token)


def advance(
    ctx: FlowContext,
    row: ItemRow,
    new: ItemState,
    *,
    attempt: AttemptColumns | None = None,
    **values: Unpack[ItemColumns],
) -> bool:
    """Leave a claimed state; False means the claim was lost (lease expired and re-taken)."""
    values.setdefault("next_run_at", None)
    values["tries"] = 0
    ok = ctx.ledger.move(row.id, row.state, new, owner=ctx.owner, attempt=attempt, **values)
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
    with (
        bound_contextvars(
            batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt, stage="prepare"
        ),
        keep_alive(ctx, claimed),
    ):
        try:
            info = ctx.info(claimed)
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
                    download=ctx.download,
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


def transcribe_step(ctx: FlowContext, row: ItemRow) -> bool:
    """PREPARED → SUCCEEDED for clip engines (local faster-whisper, sync DashScope).
    True once the item is SUCCEEDED."""
    claimed = claim(ctx, row, ItemState.PREPARED, ItemState.TRANSCRIBING)
    if claimed is None:
        return False
    workdir = ctx.workdir(claimed)
    with (
        bound_contextvars(
            batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt, stage="transcribe"
        ),
        keep_alive(ctx, claimed),
    ):
        try:
            facts = claimed.facts or AudioFacts()
            path = ctx.media.local(str(claimed.media_key), workdir)
            audio = NormalizedAudio(path, facts.normalized_s, offset_s=facts.offset_s)
            channel = claimed.request.channel or 0
            t0 = time.monotonic()
            transcript = transcribe_file(
                audio,
                ctx.clip_engine(ctx.info(claimed)),
                ctx.asr_options(claimed),
                channel_id=channel,
            )
            seconds = time.monotonic() - t0
            ctx.emit("stage.done", stage="transcribe", seconds=seconds)
            done = finish(
                ctx,
                claimed,
                [transcript],
                timings=add_timing(claimed.timings, "transcribe", seconds),
            )
            log.info(
                "transcribe.done", seconds=round(seconds, 3), sentences=len(transcript.sentences)
            )
            return done
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return False


def finish(
    ctx: FlowContext,
    claimed: ItemRow,
    transcripts: Sequence[Transcript],
    *,
    timings: dict[str, float] | None = None,
) -> bool:
    """Write the outputs and mark the item SUCCEEDED; drop audio nobody else needs.
    False if the claim was lost on the way."""
    probe = ProbeResult.from_dict(dict(claimed.probe or {}))
    source = claimed.request.source or claimed.source
    document = build_document(display(source), probe, transcripts)
    t0 = time.monotonic()
    outputs = write_item(
        ctx.sinks(claimed.batch_id), claimed.key, document, transcripts, ctx.formats
    )
    timings = add_timing(timings or claimed.timings, "persist", time.monotonic() - t0)
    # The detected language rides with the item's audio facts (results.jsonl reads it there).
    language = next((t.language for t in transcripts if t.language), None)
    facts = {**dict(claimed.probe or {}), "language": language}
    if advance(
        ctx,
        claimed,
        ItemState.SUCCEEDED,
        outputs=outputs,
        probe=facts,
        failure=None,
        timings=timings,
        attempt=attempt_end(ItemState.SUCCEEDED, timings=timings),
    ):
        ctx.emit("item.succeeded")
        if claimed.media_key:
            with ctx.ledger.media_guard(claimed.media_key) as users:
                if users() == 0:
                    ctx.media.forget(claimed.media_key)
        ctx.item_finished(claimed.batch_id)
        return True
    return False
