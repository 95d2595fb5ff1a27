"""results.jsonl: one line per manifest item, in manifest order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import FailureCode
from pipeline.flow.outputs import OutputSink
from pipeline.ledger import ItemRow, Ledger
from pipeline.manifest import display
from pipeline.models import ManifestItem, ManifestProblem
from pipeline.render import atomic_write
from pipeline.states import ItemState


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One line of results.jsonl."""

    id: str | None
    source: str | None
    status: str
    error: dict[str, str] | None
    outputs: dict[str, str]
    audio_duration_ms: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "status": self.status, "error": self.error,
                "outputs": self.outputs, "audio_duration_ms": self.audio_duration_ms}


def result_of(entry: ManifestItem | ManifestProblem, row: ItemRow | None) -> ItemResult:
    if isinstance(entry, ManifestProblem):
        src = display(entry.source) if entry.source else None
        return ItemResult(entry.item_id, src, "FAILED",
                          {"code": entry.code, "message": entry.message}, {}, None)
    source = display(entry.source)
    if row is None or not row.state.terminal:
        return ItemResult(entry.item_id, source, "PENDING", None, {}, None)
    if row.state is ItemState.SUCCEEDED:
        return ItemResult(entry.item_id, source, "SUCCEEDED", None, dict(row.outputs or {}),
                          row.audio_duration_ms)
    error = {"code": row.error_code or FailureCode.INTERNAL.value,
             "message": row.error_message or ""}
    status = "SKIPPED" if row.state is ItemState.SKIPPED else "FAILED"
    return ItemResult(entry.item_id, source, status, error, {}, row.audio_duration_ms)


def result_of_row(row: ItemRow) -> ItemResult:
    """A distributed batch's line, from the ledger alone; DEAD items say so."""
    item_id = row.spec.get("id") if row.key.startswith("@") else row.key
    source = display(row.source) if row.source else None
    if row.state is ItemState.SUCCEEDED:
        return ItemResult(item_id, source, "SUCCEEDED", None, dict(row.outputs or {}),
                          row.audio_duration_ms)
    if not row.state.terminal:
        return ItemResult(item_id, source, "PENDING", None, {}, None)
    error = {"code": row.error_code or FailureCode.INTERNAL.value,
             "message": row.error_message or ""}
    return ItemResult(item_id, source, row.state.value, error, {}, row.audio_duration_ms)


def jsonl(results: Sequence[ItemResult]) -> str:
    return "".join(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in results)


def write_results(out_dir: Path, results: Sequence[ItemResult]) -> Path:
    path = out_dir / "results.jsonl"
    atomic_write(path, jsonl(results))
    return path


def write_batch_results(ledger: Ledger, batch_id: str, sink: OutputSink) -> str:
    rows = ledger.list_items(batch_id)
    return sink.write_text("results.jsonl", jsonl([result_of_row(r) for r in rows]))
