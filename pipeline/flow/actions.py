"""What an item needs next, read off its ledger row. Pure: no I/O, no clock of its own.

Both drivers ask this (through :mod:`pipeline.flow.plan`): the embedded runner to fill its
thread pools, the Celery dispatcher and sweeper to queue work.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pipeline.asr.catalog import Mode
from pipeline.ledger import ItemRow
from pipeline.states import ItemState


class Action(StrEnum):
    PREPARE = "prepare"
    TRANSCRIBE = "transcribe"
    SUBMIT = "submit"
    POLL = "poll"
    RECONCILE = "reconcile"  # a submission cut short: ask the provider before sending again


def due_from(row: ItemRow) -> datetime | None:
    """When ``row``'s next step falls due (None: already). A SUBMITTING row is reconciled only
    once its submitter's lease ran out; anything else waits for its ``next_run_at``."""
    return row.lease_until if row.state is ItemState.SUBMITTING else row.next_run_at


def next_action(row: ItemRow, mode: Mode, now: datetime) -> Action | None:
    """The step that moves ``row`` on, or None (claimed by someone, finished, or not due)."""
    due = due_from(row)
    if due is not None and due > now:
        return None
    return action_for(row, mode)


def action_for(row: ItemRow, mode: Mode) -> Action | None:
    """The step ``row``'s state calls for once it is due (:func:`due_from`), or None."""
    if row.state is ItemState.SUBMITTING:
        return Action.RECONCILE
    if row.state is ItemState.PENDING:
        return Action.PREPARE
    if row.state is ItemState.PREPARED:
        return after_prepare(mode)
    if row.state is ItemState.SUBMITTED:
        return Action.POLL
    return None


def after_prepare(mode: Mode) -> Action:
    """The step a prepared item takes next: clip engines transcribe, async ones submit."""
    return Action.TRANSCRIBE if mode is Mode.CLIP else Action.SUBMIT


def queue_for(action: Action) -> str:
    """The Celery queue each action runs on (see the design's queue table)."""
    return {
        Action.PREPARE: "prepare",
        Action.TRANSCRIBE: "transcribe",
        Action.SUBMIT: "provider",
        Action.POLL: "provider",
        Action.RECONCILE: "provider",
    }[action]


# A poll message may take this long (at most) before the sweeper sends the poll again. A
# worker holds its countdown polls in memory until they are due; killed, it takes them
# along (the broker gives them back only after its visibility timeout, hours). A poll sent
# twice costs one more status request and nothing else, so its slack is short.
POLL_SLACK_S = 30.0


def redispatch_slack(action: Action | None, redispatch_s: float) -> float:
    """How long a queued message for ``action`` may wait before it is presumed lost."""
    return min(redispatch_s, POLL_SLACK_S) if action is Action.POLL else redispatch_s
