"""Item states and the transitions the ledger allows between them.

Claimed states (``PREPARING``, ``TRANSCRIBING``, ``SUBMITTING``, ``PERSISTING``) carry a lease:
a worker that dies leaves the lease to expire, and the sweeper (or the next embedded run)
moves the item back to the state it was claimed from.

The ledger enforces :data:`ALLOWED`: a move, claim or restart it does not list raises
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
    # Terminal states only move on by an operator's retry/reprocess, which starts a new
    # attempt from PENDING.
    ItemState.SUCCEEDED: frozenset({ItemState.PENDING}),
    ItemState.FAILED: frozenset({ItemState.PENDING}),
    ItemState.DEAD: frozenset({ItemState.PENDING, ItemState.FAILED}),  # replay, purge
    ItemState.CANCELLED: frozenset({ItemState.PENDING}),  # reprocess
    ItemState.SKIPPED: frozenset({ItemState.PENDING}),  # re-admitted under a higher cap
}


def can_move(old: ItemState, new: ItemState) -> bool:
    return new in ALLOWED[old]
