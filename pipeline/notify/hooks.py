"""Where runs meet notifications: endpoint checks at the CLI, the embedded run's close and
flush, a scheduled run's start. Each is a few lines over :mod:`outbox` and :mod:`delivery`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from pipeline.inputs.manifest import display
from pipeline.log import get_logger
from pipeline.notify import events, outbox
from pipeline.notify.delivery import DeliveryReport, deliverer
from pipeline.planning.pricing import PriceTable
from pipeline.settings import Settings, check_notify_url

log = get_logger("bulkscribe.notify")


def checked_urls(flags: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """``--notify`` URLs, checked; ValueError names what is wrong (a usage error)."""
    urls = tuple(dict.fromkeys(check_notify_url(u) for u in flags))
    if (urls or settings.notify.urls) and settings.notify_secret is None:
        raise ValueError(
            "notifications are signed: set BULKSCRIBE_NOTIFY_SECRET "
            "(whsec_ + base64 of 16 to 64 random bytes)"
        )
    return urls


def embedded_close(
    engine: Engine, settings: Settings, urls: Sequence[str], out_dir: Path
) -> Callable[[str, Any], None]:
    """The embedded runner's ``on_complete``: the batch marked done and its
    batch.completed written in one transaction. A run that did new work announces again;
    one that found everything done announces only a batch a killed run left open."""

    def close(batch_id: str, summary: Any) -> None:
        audio_ms = sum(r.audio_duration_ms or 0 for r in summary.results if r.status == "SUCCEEDED")
        outbox.complete_batch(
            engine,
            batch_id,
            notify=settings.notify,
            results=str(out_dir / "results.jsonl"),
            extra_urls=urls,
            again=summary.processed > 0,
            prices=PriceTable.of(settings),
            counts=summary.counts,
            audio_s=audio_ms / 1000,
        )

    return close


def flush(
    settings: Settings, engine: Engine, budget_s: float | None = None, ids: list[str] | None = None
) -> DeliveryReport | None:
    """Deliver what is due for up to ``notify.flush_s``; None when nothing was waiting."""
    if outbox.next_due(engine) is None:
        return None
    budget = settings.notify.flush_s if budget_s is None else budget_s
    sender = deliverer(settings, engine)
    try:
        report = sender.flush(budget, ids=ids)
    except KeyboardInterrupt:  # Ctrl-C while delivering: what is left stays in the outbox
        report = DeliveryReport()
    finally:
        sender.close()
    left = outbox.next_due(engine)
    if left is not None:
        log.warning(
            "notify.left_waiting",
            next_try=left.isoformat(),
            hint="delivered by the next run, the sweeper or `bulkscribe notify replay`",
        )
    return report


def schedule_started(
    conn: Connection,
    settings: Settings,
    *,
    schedule: str,
    batch_id: str,
    items: int,
    source: str,
    out: str,
    urls: Sequence[str],
) -> list[str]:
    """schedule.run_started, once per batch (its dedupe key) and endpoint, written on
    ``conn``: the transaction that creates the batch, so neither exists without the other."""
    batch_urls = list(dict.fromkeys([*settings.notify.urls, *urls]))
    if not batch_urls:
        return []
    event = events.schedule_run_started(
        schedule=schedule,
        batch_id=batch_id,
        items=items,
        source=display(source),
        out=display(out),
        at=outbox._utcnow(),
        console_url=settings.notify.console_url,
    )
    return outbox.enqueue(conn, event, batch_urls, batch_id=batch_id)
