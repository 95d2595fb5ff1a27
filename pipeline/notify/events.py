"""Event payloads: pure builders over plain values, small by design (ids and counts).

Every body is the Standard Webhooks envelope ``{"type", "timestamp", "data"}``, serialised
once when the event is written to the outbox, so every try sends the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

BATCH_COMPLETED = "batch.completed"
BATCH_ITEMS_DEAD = "batch.items_dead"
SCHEDULE_RUN_STARTED = "schedule.run_started"
TYPES = (BATCH_COMPLETED, BATCH_ITEMS_DEAD, SCHEDULE_RUN_STARTED)

MAX_IDS = 500  # ids per batch.items_dead event; more dead items make more events


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    body: bytes  # the exact bytes every try sends and signs
    dedupe: str | None = None  # at most one event per key (and endpoint)


def envelope(event_type: str, at: datetime, data: Mapping[str, Any]) -> bytes:
    doc = {
        "type": event_type,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "data": dict(data),
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def console_link(console_url: str | None, batch_id: str) -> str | None:
    return f"{console_url.rstrip('/')}/batches/{batch_id}" if console_url else None


def batch_completed(
    *,
    batch_id: str,
    kind: str,
    counts: Mapping[str, int],
    audio_s: float,
    results: str | None,
    at: datetime,
    cost: float | None = None,
    currency: str | None = None,
    console_url: str | None = None,
) -> Event:
    """A batch whose every item is finished; ``results`` is where results.jsonl is;
    ``cost`` is None when it is unknown (a model without a price)."""
    data = {
        "batch_id": batch_id,
        "kind": kind,
        "total": sum(counts.values()),
        "counts": dict(sorted(counts.items())),
        "audio_s": round(audio_s, 3),
        "cost": None if cost is None else round(cost, 6),
        "currency": currency,
        "results": results,
        "console": console_link(console_url, batch_id),
    }
    return Event(BATCH_COMPLETED, envelope(BATCH_COMPLETED, at, data))


def items_dead(
    *, batch_id: str, ids: Sequence[str], at: datetime, console_url: str | None = None
) -> list[Event]:
    """Items that ran out of retries, noted by one sweep: one event per ``MAX_IDS`` ids."""
    events = []
    for start in range(0, len(ids), MAX_IDS):
        part = list(ids[start : start + MAX_IDS])
        data = {
            "batch_id": batch_id,
            "count": len(part),
            "ids": part,
            "console": console_link(console_url, batch_id),
        }
        events.append(Event(BATCH_ITEMS_DEAD, envelope(BATCH_ITEMS_DEAD, at, data)))
    return events


def dead_ids(body: str) -> list[str]:
    return list(json.loads(body)["data"]["ids"])


def with_dead_id(body: str, item_id: str) -> str | None:
    """A waiting ``batch.items_dead`` body with one more id; None when it is full
    (``MAX_IDS``) or already lists it. Pure: the envelope's other fields are kept."""
    doc = json.loads(body)
    data = doc["data"]
    if item_id in data["ids"] or len(data["ids"]) >= MAX_IDS:
        return None
    data["ids"].append(item_id)
    data["count"] = len(data["ids"])
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def schedule_run_started(
    *,
    schedule: str,
    batch_id: str,
    items: int,
    source: str,
    out: str,
    at: datetime,
    console_url: str | None = None,
) -> Event:
    """A scheduled run made a batch of the files it found (``source`` shown masked)."""
    data = {
        "schedule": schedule,
        "batch_id": batch_id,
        "items": items,
        "source": source,
        "out": out,
        "console": console_link(console_url, batch_id),
    }
    return Event(
        SCHEDULE_RUN_STARTED,
        envelope(SCHEDULE_RUN_STARTED, at, data),
        dedupe=f"{SCHEDULE_RUN_STARTED}:{batch_id}",
    )
