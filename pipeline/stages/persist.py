"""Persist: the result document and its renderings written where the user asked, and the
item marked SUCCEEDED.

:func:`finish` is shared by both ways an item ends well: a clip engine's transcript
(:mod:`.transcribe`) and an async task's result fetched by :func:`persist_step`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from structlog.contextvars import bound_contextvars

from pipeline.asr.dashscope import transcripts_from_result
from pipeline.errors import PipelineError
from pipeline.flow.claims import advance, claim, keep_alive
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.outputs import write_item
from pipeline.inputs.manifest import display
from pipeline.ledger import ItemRow
from pipeline.ledger.repo import add_timing, attempt_end
from pipeline.log import get_logger
from pipeline.models import ProbeResult
from pipeline.outputs.transcript import Transcript, build_document
from pipeline.states import ItemState

log = get_logger("bulkscribe.flow")


def finish(
    ctx: FlowContext,
    claimed: ItemRow,
    transcripts: Sequence[Transcript],
    *,
    timings: dict[str, float] | None = None,
    close: bool = True,
) -> bool:
    """Write the outputs and mark the item SUCCEEDED; drop audio nobody else needs.
    False if the claim was lost on the way. ``close=False``: the caller asks once, for
    several items, whether their batch is finished (``ctx.item_finished``)."""
    probe = ProbeResult.from_dict(dict(claimed.probe or {}))
    source = claimed.request.source or claimed.source
    document = build_document(display(source), probe, transcripts)
    t0 = time.monotonic()
    outputs = write_item(
        ctx.sinks(claimed.batch_id), claimed.key, document, transcripts, ctx.rules.formats
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
            with ctx.ledger.media_guard(claimed.media_key) as in_use:
                if not in_use():
                    ctx.media.forget(claimed.media_key)
        if close:
            ctx.item_finished(claimed.batch_id)
        return True
    return False


def persist_step(ctx: FlowContext, row: ItemRow, result_url: str, *, close: bool = True) -> bool:
    """SUBMITTED → SUCCEEDED: fetch the result while its URL is valid, write the outputs.
    True once the item is SUCCEEDED. ``close``: as :func:`finish`'s."""
    claimed = claim(ctx, row, ItemState.SUBMITTED, ItemState.PERSISTING)
    if claimed is None:
        return False
    with (
        bound_contextvars(
            batch_id=row.batch_id, item_id=row.key, attempt=claimed.attempt, stage="persist"
        ),
        keep_alive(ctx, claimed),
    ):
        try:
            document = ctx.client().fetch_result(result_url)
            offset_s = claimed.facts.offset_s if claimed.facts else 0.0
            offset_ms = int(round(offset_s * 1000))
            channel = claimed.request.channel
            transcripts = [
                _relabel(t.shifted(offset_ms), channel) for t in transcripts_from_result(document)
            ]
            done = finish(
                ctx, claimed, transcripts or [Transcript(channel_id=channel or 0)], close=close
            )
            log.info("persist.done", sentences=sum(len(t.sentences) for t in transcripts))
            return done
        except PipelineError as exc:
            # result_expired (the 24 h result URL lapsed) is transient: transcribe again.
            handle_failure(ctx, claimed, exc, back_to=ItemState.PREPARED)
        except Exception as exc:
            handle_failure(ctx, claimed, exc)
    return False


def _relabel(t: Transcript, channel: int | None) -> Transcript:
    # We send the provider one picked channel as mono; its channel 0 is the source's N.
    return replace(t, channel_id=channel) if channel is not None else t


__all__ = ["finish", "persist_step"]
