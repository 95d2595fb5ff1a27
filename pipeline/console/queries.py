"""What the console shows, read from the ledger: batches, item pages, an item's history.

Every value that leaves here for a page or the API is display-safe: sources go through
:func:`pipeline.inputs.classify.display` (credentials masked), provider messages through
:func:`pipeline.log.redact_text`, and the URL a provider was given (presigned) is never
included. Item pages use keyset pagination on ``(line_no, id)`` within a batch, which the
indexes of migration 0004 serve without scanning.
"""

from __future__ import annotations

import base64
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, tuple_

from pipeline.inputs.classify import display
from pipeline.ledger import ItemRow, Ledger, utcnow
from pipeline.ledger.counts import BatchCounts, batch_counts, counts_by_batch
from pipeline.ledger.tables import batches, items
from pipeline.log import redact_text
from pipeline.states import TERMINAL, ItemState

PAGE_MAX = 500
ORDER = [s.value for s in ItemState]


def _text(value: str | None) -> str | None:
    return redact_text(value) if value else value


def redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


# -- batches ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchFilter:
    state: str | None = None  # batches with at least one item in this state
    schedule: str | None = None  # batches a schedule made
    date: str | None = None  # YYYY-MM-DD (UTC) the batch was created


def batch_list(
    ledger: Ledger, flt: BatchFilter = BatchFilter(), *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every batch, newest first, with its counts, audio hours, throughput and ETA."""
    now = now or utcnow()
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(batches).order_by(batches.c.created_at.desc())).all()
    per = counts_by_batch(ledger.engine)
    out = []
    for row in rows:
        b = row._mapping
        kept = per.get(b["id"], BatchCounts())
        summary = summarize(dict(b), kept.counts, kept.audio_ms, kept.last_finished, now)
        if flt.state and not summary["counts"].get(flt.state):
            continue
        if flt.schedule and summary["schedule"] != flt.schedule:
            continue
        if flt.date and str(summary["created_at"])[:10] != flt.date:
            continue
        out.append(summary)
    return out


def _aware(value: datetime | None) -> datetime | None:
    from pipeline.ledger.repo import _aware as aware

    return aware(value)


def schedule_of(batch_id: str, kind: str) -> str | None:
    """The schedule a ``sched-<name>-<YYYYmmdd-HHMM>`` batch came from."""
    if kind != "schedule" or not batch_id.startswith("sched-"):
        return None
    return batch_id.removeprefix("sched-").rsplit("-", 2)[0]


def summarize(
    batch: Mapping[str, Any],
    counts: Mapping[str, int],
    ms: Mapping[str, int],
    last_finished: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """A batch's progress: pure arithmetic over its counts and times."""
    total = sum(counts.values())
    finished = sum(n for s, n in counts.items() if ItemState(s) in TERMINAL)
    created = _aware(batch["created_at"])
    assert created is not None
    active = finished < total
    end = now if active else (last_finished or now)
    elapsed = max((end - created).total_seconds(), 1e-3)
    audio_done_s = sum(v for s, v in ms.items() if s == ItemState.SUCCEEDED.value) / 1000
    audio_known_s = sum(ms.values()) / 1000
    rate = finished / elapsed  # items per second over the batch's life
    return {
        "batch_id": batch["id"],
        "kind": batch["kind"],
        "engine": batch["engine"],
        "model": batch["model"],
        "out": display(str(batch["out"])),
        "created_at": created.isoformat(),
        "done_at": (_aware(batch["done_at"]).isoformat() if batch.get("done_at") else None),  # type: ignore[union-attr]
        "schedule": schedule_of(batch["id"], batch["kind"]),
        "total": total,
        "finished": finished,
        "counts": dict(counts),
        "percent": round(100 * finished / total, 1) if total else 100.0,
        "audio_done_h": round(audio_done_s / 3600, 3),
        "audio_total_h": round(audio_known_s / 3600, 3),
        "items_per_min": round(rate * 60, 2),
        "realtime_x": round(audio_done_s / elapsed, 2),
        "eta_s": round((total - finished) / rate) if active and rate > 0 else None,
        "active": active,
    }


def batch_summary(ledger: Ledger, batch_id: str) -> dict[str, Any] | None:
    batch = ledger.batch(batch_id)
    if batch is None:
        return None
    kept = batch_counts(ledger.engine, batch_id)  # item_counts: a few rows, not the batch's
    return summarize(batch, kept.counts, kept.audio_ms, kept.last_finished, utcnow())


def failure_groups(ledger: Ledger, batch_id: str) -> list[dict[str, Any]]:
    """Failed, dead and cancelled items by error code: count and one example message."""
    ended = [ItemState.FAILED.value, ItemState.DEAD.value, ItemState.CANCELLED.value]
    query = (
        select(items.c.error_code, func.count(), func.min(items.c.error_message))
        .where(and_(items.c.batch_id == batch_id, items.c.state.in_(ended)))
        .group_by(items.c.error_code)
        .order_by(func.count().desc())
    )
    with ledger.engine.connect() as conn:
        return [
            {"code": code, "count": n, "example": _text(msg)}
            for code, n, msg in conn.execute(query)
        ]


def stage_timings(ledger: Ledger, batch_id: str, *, sample: int = 5000) -> list[dict[str, Any]]:
    """p50/p95 seconds per stage over the batch's first ``sample`` timed items in manifest
    order (a bounded sample read along an index, so a million-item batch answers as fast as
    a small one)."""
    per: dict[str, list[float]] = {}
    for timing in ledger.timings(batch_id, limit=sample):
        for stage, seconds in timing.items():
            per.setdefault(stage, []).append(float(seconds))
    out = []
    for stage, values in sorted(per.items()):
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        out.append(
            {
                "stage": stage,
                "count": len(values),
                "p50_s": round(statistics.median(ordered), 3),
                "p95_s": round(p95, 3),
            }
        )
    return out


# -- items -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFilter:
    state: str | None = None
    code: str | None = None
    q: str | None = None  # a substring of the item id
    after: str | None = None  # the cursor of the previous page
    limit: int = 50


class BadCursor(ValueError):
    pass


def encode_cursor(line_no: int, item_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([line_no, item_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        line_no, item_id = json.loads(raw)
        return int(line_no), str(item_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor(f"bad cursor {cursor!r}") from exc


def item_id_of(row: ItemRow) -> str | None:
    """The id a person knows the item by (a bad manifest line keeps its own)."""
    return row.item_id


def item_json(row: ItemRow) -> dict[str, Any]:
    error = (
        {"code": row.error_code, "message": _text(row.error_message) or ""}
        if row.error_code
        else None
    )
    return {
        "item": row.id,
        "batch_id": row.batch_id,
        "id": item_id_of(row),
        "key": row.key,
        "line": row.line_no,
        "state": row.state.value,
        "error": error,
        "source": display(row.source),
        "attempt": row.attempt,
        "audio_duration_ms": row.audio_duration_ms,
        "provider_task_id": row.provider_task_id,
        "updated_at": row.updated_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def items_page(
    ledger: Ledger, batch_id: str, flt: ItemFilter
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a batch's items in manifest order, and the cursor of the next."""
    limit = max(1, min(flt.limit, PAGE_MAX))
    cond = [items.c.batch_id == batch_id]
    if flt.state:
        cond.append(items.c.state == flt.state)
    if flt.code:
        cond.append(items.c.error_code == flt.code)
    if flt.q:
        escaped = flt.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        cond.append(items.c.key.like(f"%{escaped}%", escape="\\"))
    if flt.after:
        line_no, item_id = decode_cursor(flt.after)
        cond.append(tuple_(items.c.line_no, items.c.id) > tuple_(line_no, item_id))
    query = select(items).where(and_(*cond)).order_by(items.c.line_no, items.c.id).limit(limit + 1)
    with ledger.engine.connect() as conn:
        rows = [ItemRow.from_row(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1].line_no, rows[-1].id) if more and rows else None
    return [item_json(r) for r in rows], cursor


def find_item(ledger: Ledger, batch_id: str, item_key: str) -> ItemRow | None:
    found = ledger.list_items(batch_id, keys=[item_key])
    return found[0] if found else None


def attempt_json(a: Mapping[str, Any]) -> dict[str, Any]:
    started = _aware(a["started_at"])
    finished = _aware(a.get("finished_at"))
    return {
        "number": a["number"],
        "engine": a["engine"],
        "model": a["model"],
        "options": redacted(a.get("options") or {}),
        "state": a["state"],
        "started_at": started.isoformat() if started else None,
        "finished_at": finished.isoformat() if finished else None,
        "duration_s": round((finished - started).total_seconds(), 3)
        if started and finished
        else None,
        "timings": dict(a.get("timings") or {}),
        "provider_task_id": a.get("provider_task_id"),
        "provider_request_id": a.get("provider_request_id"),
        "error": {"code": a["error_code"], "message": _text(a.get("error_message")) or ""}
        if a.get("error_code")
        else None,
    }


def action_json(a: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": a["at"].isoformat(),
        "actor": a["actor"],
        "action": a["action"],
        "batch_id": a["batch_id"],
        "detail": redacted(dict(a.get("detail") or {})),
    }


def item_detail(ledger: Ledger, row: ItemRow) -> dict[str, Any]:
    """An item with its attempts and the operator actions on it (the `dlq show` facts)."""
    return {
        **item_json(row),
        "spec": redacted(
            {
                **row.spec,
                **({"source": display(row.request.source)} if row.request.source else {}),
            }
        ),
        "detail": redacted(dict(row.error_detail or {})) or None,
        "outputs": dict(row.outputs or {}),
        "timings": dict(row.timings or {}),
        "attempts": [attempt_json(a) for a in ledger.attempts_of(row.id)],
        "actions": [action_json(a) for a in ledger.actions_of(item_id=row.id)],
    }


def timeline(detail: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Attempts and actions in time order, for the item page."""
    events = [{"kind": "attempt", "at": a["started_at"], **a} for a in detail["attempts"]]
    events += [{"kind": "action", **a} for a in detail["actions"]]
    return sorted(events, key=lambda e: str(e["at"]))


# -- transcript and audio --------------------------------------------------------------------


def local_out(batch: Mapping[str, Any]) -> Path | None:
    out = str(batch["out"])
    if "://" in out and not out.startswith("file://"):
        return None
    return Path(out.removeprefix("file://"))


def read_transcript(
    batch: Mapping[str, Any], row: ItemRow, store_for: Any = None
) -> list[dict[str, Any]]:
    """The item's sentences (start/end seconds, text) from its JSON output, if it has one."""
    name = (row.outputs or {}).get("json")
    if not name:
        return []
    try:
        root = local_out(batch)
        if root is not None:
            path = (root / name).resolve()
            if not path.is_relative_to(root.resolve()):
                return []
            document = json.loads(path.read_text(encoding="utf-8"))
        elif store_for is not None:
            document = json.loads(store_for(str(batch["out"])).get_bytes(name))
        else:
            return []
    except Exception:  # unreadable or missing: the page shows no transcript
        return []
    from pipeline.outputs.transcript import from_result_document

    parsed = from_result_document(document)
    return [
        {
            "start_s": s.begin_ms / 1000,
            "end_s": s.end_ms / 1000,
            "text": s.text,
            "channel": t.channel_id,
        }
        for t in parsed.transcripts
        for s in t.sentences
    ]


def local_audio(source: str) -> Path | None:
    """The source's local file, when it is one that exists."""
    if "://" in source and not source.startswith("file://"):
        return None
    path = Path(source.removeprefix("file://"))
    return path if path.is_file() else None


# -- dead letters ----------------------------------------------------------------------------


def dead_items(ledger: Ledger, *, limit: int = 500) -> list[dict[str, Any]]:
    query = (
        select(items)
        .where(items.c.state == ItemState.DEAD.value)
        .order_by(items.c.batch_id, items.c.line_no)
        .limit(limit)
    )
    with ledger.engine.connect() as conn:
        return [item_json(ItemRow.from_row(r)) for r in conn.execute(query)]


def last_batches(ledger: Ledger, prefix: str) -> Sequence[Mapping[str, Any]]:
    """The newest batch whose id starts with ``prefix`` (a schedule's last run)."""
    query = (
        select(batches)
        .where(batches.c.id.like(prefix + "%"))
        .order_by(batches.c.created_at.desc())
        .limit(1)
    )
    with ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
