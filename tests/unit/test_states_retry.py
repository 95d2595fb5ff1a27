"""Unit tests for pipeline.states (the transition table) and pipeline.retry (backoff)."""

from __future__ import annotations

import random

import pytest

from pipeline.retry import backoff_s
from pipeline.settings import RetrySettings
from pipeline.states import (
    ALLOWED,
    CLAIMED_FROM,
    TERMINAL,
    ItemState,
    can_move,
    can_start_attempt,
)

S = ItemState

# The whole table, written out: a change to ALLOWED must change this test too.
EXPECTED = {
    S.PENDING: {S.PREPARING, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED},
    S.PREPARING: {S.PREPARED, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED},
    S.PREPARED: {S.TRANSCRIBING, S.SUBMITTING, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED},
    S.TRANSCRIBING: {S.SUCCEEDED, S.PREPARED, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED},
    S.SUBMITTING: {S.SUBMITTED, S.PREPARED, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED},
    S.SUBMITTED: {S.PERSISTING, S.PREPARED, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED},
    S.PERSISTING: {S.SUCCEEDED, S.SUBMITTED, S.PREPARED, S.PENDING, S.FAILED, S.DEAD, S.CANCELLED},
    # Finished items leave only by a new attempt (below), or DEAD by a purge to FAILED.
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.DEAD: {S.FAILED},
    S.CANCELLED: set(),
    S.SKIPPED: set(),
}

# A new attempt's rule, written out too: the states it starts from, and those it enters.
ENTERS = {S.PENDING, S.FAILED}
FINISHED = {S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED}
UNFINISHED_IDLE = {S.PENDING, S.PREPARED, S.SUBMITTED}
CLAIMED = {S.PREPARING, S.TRANSCRIBING, S.SUBMITTING, S.PERSISTING}


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_can_move_table(old: ItemState, new: ItemState) -> None:
    """can_move allows exactly the transitions in the written-out table, and no self-moves."""
    assert can_move(old, new) is (new in EXPECTED[old])
    assert not can_move(old, old)


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
@pytest.mark.parametrize("running", [False, True])
def test_new_attempt_rule(old: ItemState, new: ItemState, running: bool) -> None:
    """A new attempt enters PENDING or FAILED; it starts from a finished item always, from
    PENDING, PREPARED or SUBMITTED only with restart_running, from a claimed state never."""
    assert set(S) == FINISHED | UNFINISHED_IDLE | CLAIMED
    starts = old in FINISHED or (running and old in UNFINISHED_IDLE)
    assert can_start_attempt(old, new, running=running) is (starts and new in ENTERS)


def test_every_state_has_a_row_and_claims_can_fall_back() -> None:
    """Every state is in ALLOWED, and each claimed state may return to where it was claimed from."""
    assert set(ALLOWED) == set(S)
    for claimed, origin in CLAIMED_FROM.items():
        assert claimed.claimed and not origin.claimed
        assert can_move(origin, claimed) and can_move(claimed, origin)


def test_terminal_and_claimed_flags() -> None:
    """Exactly SUCCEEDED, FAILED, DEAD, CANCELLED and SKIPPED are terminal; the four -ING
    states are claimed."""
    assert (
        {s for s in S if s.terminal}
        == TERMINAL
        == {S.SUCCEEDED, S.FAILED, S.DEAD, S.CANCELLED, S.SKIPPED}
    )
    assert {s for s in S if s.claimed} == {S.PREPARING, S.TRANSCRIBING, S.SUBMITTING, S.PERSISTING}


POLICY = RetrySettings(max_attempts=5, backoff_base_s=2.0, backoff_max_s=60.0)


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("tries", "ceiling"), [(0, 2.0), (1, 4.0), (3, 16.0), (5, 60.0), (40, 60.0)]
)
def test_backoff_is_between_half_and_all_of_the_capped_ceiling(tries: int, ceiling: float) -> None:
    """The wait is ceiling x [0.5, 1], ceiling = min(max, base x 2^tries)."""
    assert backoff_s(tries, POLICY, rng=Fixed(0.0)) == pytest.approx(ceiling / 2)
    assert backoff_s(tries, POLICY, rng=Fixed(0.999999)) == pytest.approx(ceiling, rel=1e-5)
    rng = random.Random(7)
    waits = [backoff_s(tries, POLICY, rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) - min(waits) > ceiling / 4, "jitter should spread the waits"


@pytest.mark.parametrize(("after", "expected"), [(7.5, 7.5), (600.0, 60.0)])
def test_retry_after_wins_but_is_capped(after: float, expected: float) -> None:
    """A provider's Retry-After is used as is, without jitter, up to backoff_max_s."""
    assert backoff_s(0, POLICY, retry_after_s=after, rng=Fixed(0.0)) == expected


@pytest.mark.parametrize("after", [0.0, -3.0, None])
def test_non_positive_retry_after_is_ignored(after: float | None) -> None:
    """A zero, negative or absent Retry-After falls back to exponential backoff."""
    assert backoff_s(2, POLICY, retry_after_s=after, rng=Fixed(0.0)) == pytest.approx(4.0)
