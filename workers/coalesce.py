"""Jobs due later, held briefly in the process so that those due together share a message.

A poll is queued with a countdown of seconds. Holding it for a tenth of that (at most
``HOLD_MAX_S``) and sending it with the rest of its countdown costs it nothing, and lets the
polls that this process's other steps queue meanwhile join its message: one submission per
message becomes one poll message for many tasks, and the chain stays packed from then on
(a packed poll's next polls and refills are packed too, see :mod:`workers.dispatch`).

The rows of a held job were marked by the step that queued it, with slack for its message
(``distributed.redispatch_s``, shorter for polls), so a process that dies holding some loses
nothing: the sweeper sends them again once the marks lapse, as for a lost message. A warm
shutdown sends what is held at once (workers.signals).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from pipeline.flow.plan import Job
from pipeline.log import get_logger

log = get_logger("bulkscribe.worker")

HOLD_MAX_S = 0.5  # the longest a job waits in the process for company

Timed = Sequence[tuple[Job, float]]  # jobs, each with its countdown in seconds


class Coalescer:
    """Holds (job, countdown) pairs and hands them to ``ship`` together, each with what
    is left of its countdown, once the first of them has waited its share."""

    def __init__(
        self, ship: Callable[[Timed], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ship = ship
        self._clock = clock
        self._cond = threading.Condition()
        self._held: list[tuple[Job, float]] = []  # job, when due (on the clock)
        self._ship_at = float("inf")
        self._thread: threading.Thread | None = None

    def add(self, timed: Timed) -> None:
        if not timed:
            return
        now = self._clock()
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coalescer", daemon=True)
                self._thread.start()
            for job, countdown in timed:
                self._held.append((job, now + countdown))
                self._ship_at = min(self._ship_at, now + min(HOLD_MAX_S, countdown / 10))
            self._cond.notify()

    def flush(self) -> None:
        """Send everything held now."""
        with self._cond:
            held = self._take()
        self._send(held)

    def held(self) -> int:
        with self._cond:
            return len(self._held)

    def _take(self) -> list[tuple[Job, float]]:
        held, self._held, self._ship_at = self._held, [], float("inf")
        return held

    def _send(self, held: list[tuple[Job, float]]) -> None:
        if not held:
            return
        now = self._clock()
        try:
            self._ship([(job, max(0.0, due - now)) for job, due in held])
        except Exception as exc:  # their marks lapse and the sweeper sends them again
            log.warning("dispatch.held_lost", jobs=len(held), error=f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        while True:
            with self._cond:
                wait = self._ship_at - self._clock()
                if wait > 0:
                    self._cond.wait(None if wait == float("inf") else wait)
                    continue
                held = self._take()
            self._send(held)
