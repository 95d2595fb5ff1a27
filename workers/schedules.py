"""Recurring runs: beat's schedule, and what a scheduled run does when it fires.

The schedule lives in the settings (``[[distributed.schedules]]`` in the TOML file) and is
kept by celery-redbeat in Redis, so a restarted beat neither skips nor repeats a run. A run
lists the source prefix and makes a batch of the media files no batch has seen yet; its id
is derived from the schedule name and the minute it fired, so a double fire adds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery.schedules import crontab
from sqlalchemy.exc import IntegrityError

from pipeline.errors import PipelineError
from pipeline.inputs.batches import seeds_for
from pipeline.inputs.manifest import MEDIA_EXTENSIONS, entries_from_sources
from pipeline.ledger.budgets import set_caps
from pipeline.log import get_logger
from pipeline.notify.hooks import schedule_started
from pipeline.planning.pricing import budget_caps
from pipeline.settings import DistributedSettings, ScheduleSettings
from pipeline.storage import open_store, split_url

log = get_logger("bulkscribe.schedule")


def beat_schedule(dist: DistributedSettings) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {
        "bulkscribe-sweep": {
            "task": "bulkscribe.sweep",
            "schedule": dist.sweep_s,
            "options": {"expires": max(1.0, dist.sweep_s)},
        },
    }
    for sched in dist.schedules:
        minute, hour, dom, month, dow = parse_cron(sched.cron)
        entries[f"bulkscribe-schedule-{sched.name}"] = {
            "task": "bulkscribe.scheduled_run",
            "schedule": crontab(
                minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
            ),
            "args": (sched.name,),
        }
    return entries


def parse_cron(expr: str) -> tuple[str, str, str, str, str]:
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron {expr!r}: need 5 fields (minute hour day month weekday)")
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def find_schedule(dist: DistributedSettings, name: str) -> ScheduleSettings:
    for sched in dist.schedules:
        if sched.name == name:
            return sched
    raise KeyError(f"no schedule named {name!r}")


def new_sources(wctx: Any, sched: ScheduleSettings) -> list[str]:
    """Media files under the schedule's source prefix that no batch holds yet."""
    scheme, bucket, prefix = split_url(sched.source)
    root = f"{scheme}://{bucket}" if scheme != "file" else "file:///"
    store = open_store(root, endpoint_url=wctx.settings.s3_endpoint_url)
    found = [
        store.uri(o.key)
        for o in store.list(prefix)
        if o.key.rsplit(".", 1)[-1].lower() in MEDIA_EXTENSIONS
    ]
    known = wctx.ledger.known_sources(found)
    return [s for s in found if s not in known]


def start_scheduled_run(wctx: Any, name: str, *, now: datetime | None = None) -> str | None:
    settings = wctx.settings
    sched = find_schedule(settings.distributed, name)
    sources = new_sources(wctx, sched)
    if not sources:
        log.info("schedule.nothing_new", schedule=name)
        return None
    fired = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    batch_id = f"sched-{name}-{fired}"
    engine = sched.engine or settings.engine
    model = sched.model or settings.model
    # Each run gets its own folder under the schedule's out, so results.jsonl files never clash.
    out = sched.out.rstrip("/") + "/" + batch_id
    try:  # per run: the schedule's caps, else the budget.* settings
        caps, currency = budget_caps(
            settings,
            engine,
            [model],
            max_audio_hours=sched.max_audio_hours,
            max_cost=sched.max_cost,
        )
    except PipelineError as exc:  # --max-cost without a price: never run uncapped
        log.error("schedule.budget_invalid", schedule=name, error=exc.message)
        return None
    seeds = seeds_for(
        entries_from_sources(sources, root=sched.source),
        engine=engine,
        model=model,
        language=sched.language or settings.language,
    )
    try:  # the batch and its schedule.run_started in one transaction
        wctx.ledger.ensure_batch(
            batch_id,
            kind="schedule",
            out=out,
            engine=engine,
            model=model,
            manifest=sched.source,
            options={
                "schedule": name,
                **({"notify_urls": list(sched.notify_urls)} if sched.notify_urls else {}),
            },
            then=partial(
                schedule_started,
                settings=settings,
                schedule=name,
                batch_id=batch_id,
                items=len(seeds),
                source=sched.source,
                out=out,
                urls=sched.notify_urls,
            ),
        )
    except IntegrityError:  # the same run fired twice at once: the other one announced it
        log.info("schedule.double_fire", schedule=name, batch_id=batch_id)
        return None
    set_caps(wctx.ledger, batch_id, caps, currency=currency)  # before any item exists
    report = wctx.ledger.sync_items(batch_id, seeds, engine=engine, model=model)
    log.info("schedule.batch", schedule=name, batch_id=batch_id, new=report.created)
    return batch_id
