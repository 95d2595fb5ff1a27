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
from pipeline.flow.claims import advance, advance_many, keep_alive
from pipeline.flow.context import FlowContext
from pipeline.flow.guard import handle_failure
from pipeline.flow.outputs import write_item
from pipeline.inputs.manifest import display
from pipeline.ledger import ItemRow
from pipeline.ledger.repo import ItemColumns, Move, add_timing, attempt_end
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
    move = _written(ctx, claimed, transcripts, timings)
    if not advance(ctx, claimed, ItemState.SUCCEEDED, attempt=move.attempt, **move.values):
        return False
    _succeeded(ctx, [claimed], close=close)
    return True


def persist_step(ctx: FlowContext, row: ItemRow, result_url: str, *, close: bool = True) -> bool:
    """SUBMITTED → SUCCEEDED: fetch the result while its URL is valid, write the outputs.
    True once the item is SUCCEEDED. ``close``: as :func:`finish`'s."""
    return bool(persist_many(ctx, [(row, result_url)], close=close))


def persist_many(
    ctx: FlowContext, results: Sequence[tuple[ItemRow, str]], *, close: bool = True
) -> list[str]:
    """:func:`persist_step` for several SUBMITTED items (a packed poll's finished tasks),
    each with its result URL: claimed, moved and their audio checked in one statement each,
    not one per item. Returns the ids of the items now SUCCEEDED."""
    urls = {row.id: url for row, url in results}
    claimed = ctx.ledger.claim_many(
        list(urls),
        ItemState.SUBMITTED,
        ItemState.PERSISTING,
        owner=ctx.owner,
        lease_s=ctx.rules.lease_s,
    )
    written: list[tuple[ItemRow, Move]] = []
    with keep_alive(ctx, *claimed):
        for row in claimed:
            with bound_contextvars(
                batch_id=row.batch_id, item_id=row.key, attempt=row.attempt, stage="persist"
            ):
                try:
                    transcripts = _fetched(ctx, row, urls[row.id])
                    written.append((row, _written(ctx, row, transcripts, None)))
                    log.info("persist.done", sentences=sum(len(t.sentences) for t in transcripts))
                except PipelineError as exc:
                    # result_expired (the 24 h result URL lapsed) is transient: transcribe again.
                    handle_failure(ctx, row, exc, back_to=ItemState.PREPARED)
                except Exception as exc:
                    handle_failure(ctx, row, exc)
        moved = advance_many(ctx, written, ItemState.SUCCEEDED)
    done = [row for row, _ in written if row.id in moved]
    _succeeded(ctx, done, close=close)
    return [row.id for row in done]


def _fetched(ctx: FlowContext, claimed: ItemRow, result_url: str) -> list[Transcript]:
    """The provider's result document as transcripts on the source's own time line."""
    document = ctx.client().fetch_result(result_url)
    offset_s = claimed.facts.offset_s if claimed.facts else 0.0
    offset_ms = int(round(offset_s * 1000))
    channel = claimed.request.channel
    transcripts = [
        _relabel(t.shifted(offset_ms), channel) for t in transcripts_from_result(document)
    ]
    return transcripts or [Transcript(channel_id=channel or 0)]


def _written(
    ctx: FlowContext,
    claimed: ItemRow,
    transcripts: Sequence[Transcript],
    timings: dict[str, float] | None,
) -> Move:
    """Write the item's outputs; the move to SUCCEEDED that records them."""
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
    values: ItemColumns = {"outputs": outputs, "probe": facts, "failure": None, "timings": timings}
    return Move(claimed.id, values, attempt_end(ItemState.SUCCEEDED, timings=timings))


def _succeeded(ctx: FlowContext, rows: Sequence[ItemRow], *, close: bool) -> None:
    """After items moved to SUCCEEDED: drop stored audio no unfinished item needs (one
    guard for all their keys), and close their batches if asked."""
    for _ in rows:
        ctx.emit("item.succeeded")
    keys = {r.media_key for r in rows if r.media_key}
    if keys:
        with ctx.ledger.media_guard_many(keys) as in_use:
            for key in sorted(keys - in_use()):
                ctx.media.forget(key)
    if close:
        for batch_id in dict.fromkeys(r.batch_id for r in rows):
            ctx.item_finished(batch_id)


def _relabel(t: Transcript, channel: int | None) -> Transcript:
    # We send the provider one picked channel as mono; its channel 0 is the source's N.
    return replace(t, channel_id=channel) if channel is not None else t


__all__ = ["finish", "persist_many", "persist_step"]
