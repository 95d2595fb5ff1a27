"""Seeded, reproducible fault decisions.

Every decision is a pure function of ``(seed, stream, n)``: the n-th API request and the
n-th task of a run get the same fault for the same seed, whatever the timing or the order in
which concurrent clients arrive. A hash, not a shared ``random.Random``, so no lock and no
dependence on how many other draws happened in between.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pipeline.emulator.config import EmulatorConfig


class RequestFault(StrEnum):
    NONE = "none"
    THROTTLE = "throttle"  # HTTP 429 Throttling
    ERROR = "error"  # HTTP 500 InternalError


class Fate(StrEnum):
    OK = "ok"
    FAIL = "fail"  # ends FAILED with InternalError after latency_s
    LOST = "lost"  # answers UNKNOWN once it would have finished
    STUCK = "stuck"  # RUNNING until the task expires


def unit(seed: int, stream: str, n: int) -> float:
    """A uniform number in [0, 1) fixed by its arguments."""
    digest = hashlib.blake2b(f"{seed}:{stream}:{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def request_fault(config: EmulatorConfig, n: int) -> RequestFault:
    """What the n-th API request of this run meets; decided before any side effect."""
    u = unit(config.seed, "request", n)
    if u < config.throttle_rate:
        return RequestFault.THROTTLE
    if u < config.throttle_rate + config.error_rate:
        return RequestFault.ERROR
    return RequestFault.NONE


def task_fate(config: EmulatorConfig, n: int) -> Fate:
    """How the n-th accepted task of this run will end."""
    u = unit(config.seed, "task", n)
    for fate, rate in (
        (Fate.FAIL, config.fail_rate),
        (Fate.LOST, config.lost_rate),
        (Fate.STUCK, config.stuck_rate),
    ):
        if u < rate:
            return fate
        u -= rate
    return Fate.OK
