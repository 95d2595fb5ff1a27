"""What a delivery's answer means: pure decisions over the status and the tries so far.

2xx is delivered. 410 Gone disables the endpoint (Standard Webhooks: the receiver asks to
stop). Anything else (other status codes, timeouts, connection errors) is tried again after
the next wait in the schedule, or longer if the receiver's ``Retry-After`` asks for it, until
the schedule runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pipeline.settings import NOTIFY_RETRY_SCHEDULE_S

MAX_RETRY_AFTER_S = 24 * 3600.0  # a Retry-After beyond a day is taken as a day


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    after_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """410: the endpoint is disabled; nothing more is sent to it."""


Decision = Delivered | Retry | GiveUp | Gone


def total_span_s(schedule: tuple[float, ...] = NOTIFY_RETRY_SCHEDULE_S) -> float:
    """From the event to its last try, when every try fails."""
    return float(sum(schedule))


def next_wait(
    tries: int,
    schedule: tuple[float, ...] = NOTIFY_RETRY_SCHEDULE_S,
    retry_after_s: float | None = None,
) -> float | None:
    """Seconds before try number ``tries + 1`` (``tries`` already made), or None when the
    schedule has run out. ``schedule[0]`` is the wait before the first try."""
    if tries >= len(schedule):
        return None
    wait = schedule[tries]
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
    return wait


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def decide(
    status: int | None,
    error: str | None,
    tries: int,
    schedule: tuple[float, ...] = NOTIFY_RETRY_SCHEDULE_S,
    retry_after_s: float | None = None,
) -> Decision:
    """After try number ``tries``: ``status`` is the HTTP status (None when no answer came);
    ``error`` says what went wrong, if anything."""
    if status is not None and 200 <= status < 300:
        return Delivered()
    if status == 410:
        return Gone()
    wait = next_wait(tries, schedule, retry_after_s)
    if wait is None:
        why = error or (f"HTTP {status}" if status is not None else "no answer")
        return GiveUp(f"{why} after {tries} tries")
    return Retry(wait)
