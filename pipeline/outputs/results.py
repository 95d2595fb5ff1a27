"""results.jsonl: one line per manifest item, in manifest order."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import FailureCode
from pipeline.flow.outputs import OutputSink
from pipeline.inputs.manifest import display
from pipeline.ledger import ItemRow, Ledger
from pipeline.models import ManifestItem, ManifestProblem
from pipeline.outputs.render import atomic_write
from pipeline.states import ItemState

if TYPE_CHECKING:
    from pipeline.planning.pricing import PriceTable
    from pipeline.settings import NotifySettings


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One line of results.jsonl."""

    id: str | None
    source: str | None
    status: str
    error: dict[str, str] | None
    outputs: dict[str, str]
    audio_duration_ms: int | None
    language: str | None = None  # detected (or forced) language of a finished item

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "outputs": self.outputs,
            "audio_duration_ms": self.audio_duration_ms,
            "language": self.language,
        }


def result_of(entry: ManifestItem | ManifestProblem, row: ItemRow | None) -> ItemResult:
    if isinstance(entry, ManifestProblem):
        src = display(entry.source) if entry.source else None
        return ItemResult(
            entry.item_id, src, "FAILED", {"code": entry.code, "message": entry.message}, {}, None
        )
    source = display(entry.source)
    if row is None or not row.state.terminal:
        return ItemResult(entry.item_id, source, "PENDING", None, {}, None)
    if row.state is ItemState.SUCCEEDED:
        return ItemResult(
            entry.item_id,
            source,
            "SUCCEEDED",
            None,
            dict(row.outputs or {}),
            row.audio_duration_ms,
            _language(row),
        )
    error = {
        "code": row.error_code or FailureCode.INTERNAL.value,
        "message": row.error_message or "",
    }
    status = {ItemState.CANCELLED: "CANCELLED", ItemState.SKIPPED: "SKIPPED"}.get(
        row.state, "FAILED"
    )
    return ItemResult(entry.item_id, source, status, error, {}, row.audio_duration_ms)


def result_of_row(row: ItemRow) -> ItemResult:
    """A distributed batch's line, from the ledger alone; DEAD items say so."""
    item_id = row.item_id
    source = display(row.source) if row.source else None
    if row.state is ItemState.SUCCEEDED:
        return ItemResult(
            item_id,
            source,
            "SUCCEEDED",
            None,
            dict(row.outputs or {}),
            row.audio_duration_ms,
            _language(row),
        )
    if not row.state.terminal:
        return ItemResult(item_id, source, "PENDING", None, {}, None)
    error = {
        "code": row.error_code or FailureCode.INTERNAL.value,
        "message": row.error_message or "",
    }
    return ItemResult(item_id, source, row.state.value, error, {}, row.audio_duration_ms)


def _language(row: ItemRow) -> str | None:
    """Kept with the item's audio facts when it finished (see stages.persist.finish)."""
    return row.facts.language if row.facts else None


def jsonl(results: Sequence[ItemResult]) -> str:
    return "".join(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in results)


def write_results(out_dir: Path, results: Sequence[ItemResult]) -> Path:
    path = out_dir / "results.jsonl"
    atomic_write(path, jsonl(results))
    return path


def write_batch_results(ledger: Ledger, batch_id: str, sink: OutputSink) -> str:
    """The batch's results.jsonl, streamed: rows read page by page into a temporary file,
    which the sink then moves into place (a directory) or uploads (S3: multipart)."""
    from pipeline.ledger.bulk import stream_items

    write_file = getattr(sink, "write_file", None)
    if write_file is None:  # a sink without files: the text whole
        rows = ledger.list_items(batch_id)
        return sink.write_text("results.jsonl", jsonl([result_of_row(r) for r in rows]))
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", suffix=".jsonl", prefix="bulkscribe-results-"
    ) as f:
        for row in stream_items(ledger.engine, batch_id):
            f.write(json.dumps(result_of_row(row).as_json(), ensure_ascii=False) + "\n")
        f.flush()
        return str(write_file("results.jsonl", Path(f.name)))


def close_batch(
    ledger: Ledger,
    batch_id: str,
    sink: OutputSink,
    *,
    owner: str,
    notify: NotifySettings | None = None,
    prices: PriceTable | None = None,
    lease_s: float = 300.0,
) -> bool:
    """Write a finished batch's results.jsonl and mark it done, if no one else is doing so.

    Called by the worker that finishes a batch's last item, and by the sweeper as the safety
    net. ``done`` in the ledger therefore always means results.jsonl is written, and the
    batch's ``batch.completed`` webhook (with ``notify``; its cost priced by ``prices``) is
    written in the same transaction. True if this call wrote it.
    """
    if not ledger.claim_batch_close(batch_id, owner=owner, lease_s=lease_s):
        return False
    location: str | None = None
    try:
        location = write_batch_results(ledger, batch_id, sink)
    finally:
        done = ledger.end_batch_close(
            batch_id,
            owner=owner,
            written=location is not None,
            then=None
            if notify is None
            else partial(
                _announce, batch_id=batch_id, notify=notify, results=location, prices=prices
            ),
        )
    return done


def _announce(
    conn: Any,
    *,
    batch_id: str,
    notify: NotifySettings,
    results: str | None,
    prices: PriceTable | None,
) -> None:
    from pipeline.notify.outbox import announce_completed

    announce_completed(conn, batch_id, notify=notify, results=results, prices=prices)
