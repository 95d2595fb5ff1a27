"""Fleet facts for the console: Celery workers, queue depths, the provider's load, schedules.

Everything here asks the broker with short timeouts and answers ``None`` or an empty list
when it is away, so the page says so instead of hanging.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.ledger import Ledger
from pipeline.log import redact_url
from pipeline.settings import Settings
from workers.limits import measured_rate

QUEUES = ("prepare", "provider", "transcribe")


def fleet_status(settings: Settings, ledger: Ledger, *, timeout_s: float = 1.0) -> dict[str, Any]:
    """Workers seen by Celery (what each holds), queue depths, provider tasks in flight and
    requests per second over the last minute (``None`` without the broker), each beside
    its configured limit."""
    out: dict[str, Any] = {
        "broker": redact_url(settings.broker_url),
        "reachable": False,
        "workers": [],
        "queues": {},
        "provider_inflight": ledger.inflight_tasks(),
        "provider_cap": settings.provider.max_inflight_tasks,
        "provider_rate_per_s": None,
        "provider_rate_limit_per_s": settings.provider.requests_per_s,
    }
    try:
        import redis

        client = redis.Redis.from_url(
            settings.broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        client.ping()
        out["queues"] = {q: int(client.llen(q)) for q in QUEUES}
        out["provider_rate_per_s"] = round(measured_rate(client), 2)
    except Exception as exc:  # any broker trouble means "not reachable"
        out["error"] = type(exc).__name__
        return out
    out["reachable"] = True
    try:
        out["workers"] = _workers(settings, timeout_s)
    except Exception as exc:  # the page says which
        out["error"] = type(exc).__name__
    return out


def _workers(settings: Settings, timeout_s: float) -> list[dict[str, Any]]:
    """Each worker that answers a ping: the queues it consumes, the tasks it runs, and the
    messages it holds (reserved, and scheduled: a step's countdown waits in the worker).

    A broadcast waits its whole timeout unless told how many answers to expect: the ping
    learns that, so the four questions after it end as soon as every worker has answered
    (about one timeout in all rather than five).
    """
    from workers.app import app, configure

    configure(app, settings)
    names = sorted(app.control.inspect(timeout=timeout_s).ping() or {})
    if not names:
        return []
    ask = app.control.inspect(destination=names, timeout=timeout_s, limit=len(names))
    queues = ask.active_queues() or {}
    active = ask.active() or {}
    reserved = ask.reserved() or {}
    scheduled = ask.scheduled() or {}
    return [
        {
            "name": name,
            "queues": sorted(str(q.get("name", "")) for q in queues.get(name, [])),
            "active": [_task(t) for t in active.get(name, [])],
            "reserved": len(reserved.get(name, [])),
            "scheduled": len(scheduled.get(name, [])),
        }
        for name in names
    ]


def _task(t: dict[str, Any]) -> dict[str, Any]:
    args = t.get("args") or []
    return {"task": str(t.get("name", "")), "args": [str(a)[:80] for a in args][:3]}


def schedules(
    settings: Settings, ledger: Ledger, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Each configured schedule: its cron, next and last run, and the batch it last made."""
    from pipeline.console.queries import last_batches

    now = now or datetime.now(UTC)
    out = []
    for sched in settings.distributed.schedules:
        last = last_batches(ledger, f"sched-{sched.name}-")
        out.append(
            {
                "name": sched.name,
                "cron": sched.cron,
                "source": redact_url(sched.source),
                "out": redact_url(sched.out),
                "next_run": next_run(sched.cron, now),
                "last_run": last[0]["created_at"].isoformat() if last else None,
                "last_batch": last[0]["id"] if last else None,
            }
        )
    return out


def next_run(cron: str, now: datetime) -> str | None:
    """The next time a 5-field cron (UTC) fires after ``now``."""
    try:
        from celery.schedules import crontab

        from workers.schedules import parse_cron

        minute, hour, dom, month, dow = parse_cron(cron)
        spec = crontab(
            minute=minute,
            hour=hour,
            day_of_month=dom,
            month_of_year=month,
            day_of_week=dow,
            nowfun=lambda: now,
        )
        upcoming: datetime = now + spec.remaining_estimate(now)
        return upcoming.isoformat(timespec="minutes")
    except (ValueError, ImportError):
        return None
