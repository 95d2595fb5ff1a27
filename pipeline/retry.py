"""Backoff for transient failures: exponential, capped, with full jitter."""

from __future__ import annotations

import random

from pipeline.settings import RetrySettings


def backoff_s(
    tries: int,
    policy: RetrySettings,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try number ``tries + 1``; a provider's Retry-After wins."""
    if retry_after_s is not None and retry_after_s > 0:
        return min(retry_after_s, policy.backoff_max_s)
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * (2.0**tries))
    # Jitter between half and all of the ceiling: spreads a thundering herd of retries
    # while still growing exponentially.
    draw = rng.random() if rng is not None else random.random()
    return ceiling * (0.5 + 0.5 * draw)
