"""Transcribe: PREPARED → SUCCEEDED for clip engines (local faster-whisper, sync DashScope).

The work itself, window by window, is :mod:`pipeline.asr.windows`; this step claims the item,
runs it and records the outcome.
"""

from __future__ import annotations

import shutil
import time

from structlog.contextvars import bound_contextvars

from pipeline.asr.windows import transcribe_file
from pipeline.flow.claims import claim, keep_alive
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.ledger import AudioFacts, ItemRow
from pipeline.ledger.repo import add_timing
from pipeline.log import get_logger
from pipeline.models import NormalizedAudio
from pipeline.stages.persist import finish
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


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
                ctx.clip_engine(ctx.rules.info(claimed)),
                ctx.rules.asr_options(claimed),
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
