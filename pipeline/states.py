"""Item states and the transitions the ledger allows between them.

Claimed states (``PREPARING``, ``TRANSCRIBING``, ``SUBMITTING``, ``PERSISTING``) carry a lease:
a worker that dies leaves the lease to expire, and the sweeper (or the next embedded run)
moves the item back to the state it was claimed from.

The ledger enforces :data:`ALLOWED` on every move and claim within an attempt, and
:func:`can_start_attempt` on every new attempt: a change neither allows raises
``TransitionRefused`` (``illegal_transition``) before any SQL runs.
"""

from __future__ import annotations

from enum import StrEnum


class ItemState(StrEnum):
    PENDING = "PENDING"  # known, nothing done yet (or reset for a new attempt)
    PREPARING = "PREPARING"  # claimed: probe, normalize, upload
    PREPARED = "PREPARED"  # normalized (and uploaded when a provider needs a URL)
    TRANSCRIBING = "TRANSCRIBING"  # claimed: local engine or a sync model at work
    SUBMITTING = "SUBMITTING"  # claimed: creating the provider task
    SUBMITTED = "SUBMITTED"  # provider task id recorded; polled by the sweeper
    PERSISTING = "PERSISTING"  # claimed: fetching the result and writing outputs
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # permanent, with a FailureCode
    DEAD = "DEAD"  # retries exhausted: the dead-letter set
    CANCELLED = "CANCELLED"  # an operator cancelled its batch
    SKIPPED = "SKIPPED"  # not admitted: a budget cap was reached (budget_exceeded)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def claimed(self) -> bool:
        return self in CLAIMED_FROM


TERMINAL = frozenset(
    {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.DEAD, ItemState.CANCELLED, ItemState.SKIPPED}
)

# A claimed state and the state an expired claim falls back to.
CLAIMED_FROM: dict[ItemState, ItemState] = {
    ItemState.PREPARING: ItemState.PENDING,
    ItemState.TRANSCRIBING: ItemState.PREPARED,
    # A submit whose outcome is unknown goes back to PREPARED only after the provider
    # has been asked whether it already holds a task for this attempt.
    ItemState.SUBMITTING: ItemState.PREPARED,
    ItemState.PERSISTING: ItemState.SUBMITTED,
}

# Cancelling a batch ends every unfinished item at once, claimed or not (→ CANCELLED from
# each of them): the worker holding a claim then loses its compare-and-set, and the step's
# result is discarded.
ALLOWED: dict[ItemState, frozenset[ItemState]] = {
    ItemState.PENDING: frozenset(
        {
            ItemState.PREPARING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
            ItemState.SKIPPED,
        }
    ),
    ItemState.PREPARING: frozenset(
        {
            ItemState.PREPARED,
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
        }
    ),
    ItemState.PREPARED: frozenset(
        {
            ItemState.TRANSCRIBING,
            ItemState.SUBMITTING,
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
            ItemState.SKIPPED,
        }
    ),
    ItemState.TRANSCRIBING: frozenset(
        {
            ItemState.SUCCEEDED,
            ItemState.PREPARED,
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
        }
    ),
    ItemState.SUBMITTING: frozenset(
        {
            ItemState.SUBMITTED,
            ItemState.PREPARED,
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
        }
    ),
    ItemState.SUBMITTED: frozenset(
        {
            ItemState.PERSISTING,
            ItemState.PREPARED,
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
        }
    ),
    ItemState.PERSISTING: frozenset(
        {
            ItemState.SUCCEEDED,
            ItemState.SUBMITTED,
            ItemState.PREPARED,  # the result URL expired (result_expired): transcribe again
            ItemState.PENDING,
            ItemState.FAILED,
            ItemState.DEAD,
            ItemState.CANCELLED,
        }
    ),
    # A finished item goes on only by a new attempt (NEW_ATTEMPT_FROM below), never by a
    # move: a move would reopen it without closing its attempt or opening the next.
    ItemState.SUCCEEDED: frozenset(),
    ItemState.FAILED: frozenset(),
    ItemState.DEAD: frozenset({ItemState.FAILED}),  # purged from the dead-letter set
    ItemState.CANCELLED: frozenset(),
    ItemState.SKIPPED: frozenset(),
}

# A new attempt (an operator's retry, replay or reprocess; re-admission under a higher cap; a
# re-run that finds a changed line or source, or --force) is not a move within an attempt:
# it closes the item's attempt and opens the next one, numbered one up, with its tries, task
# and media cleared. So it is not a row of ALLOWED but has its own rule.
#
# It enters PENDING, or FAILED when intake refuses the line at once (manifest_invalid, a
# local file that is missing): that attempt is closed as it opens.
NEW_ATTEMPT_ENTERS = frozenset({ItemState.PENDING, ItemState.FAILED})
# It starts from a finished item always; from an unfinished one that no worker holds only
# when the caller says nothing else acts on it (``restart_running``: an embedded run holds
# its --out lock, while a distributed batch's items in flight are left to finish). Never from
# a claimed state: a worker holds the lease and may be mid-step (a submission on the wire
# would leave a provider task that no attempt knows).
NEW_ATTEMPT_FROM = TERMINAL
NEW_ATTEMPT_FROM_UNFINISHED = frozenset(
    {ItemState.PENDING, ItemState.PREPARED, ItemState.SUBMITTED}
)


def can_move(old: ItemState, new: ItemState) -> bool:
    return new in ALLOWED[old]


def can_start_attempt(old: ItemState, new: ItemState, *, running: bool = False) -> bool:
    """May an item in ``old`` start a new attempt in ``new``? ``running``: the caller's
    ``restart_running`` (unfinished, unclaimed items too)."""
    if new not in NEW_ATTEMPT_ENTERS:
        return False
    return old in NEW_ATTEMPT_FROM or (running and old in NEW_ATTEMPT_FROM_UNFINISHED)
