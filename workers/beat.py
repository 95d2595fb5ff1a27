"""Beat's scheduler: celery-redbeat, made to outlive a broker outage.

Plain ``RedBeatScheduler`` lets any Redis error in ``tick()`` escape, and Celery beat exits on
it; a Redis restarted without persistence also comes back without the beat lock and without
the schedule entries redbeat keeps there. Found by the broker-restart test
(``tests/distributed/test_dist_crash.py``): the worker reconnected, beat was gone, and with it
the sweeper that re-queues the messages the restart lost.

So a failed tick is logged and retried after a short pause instead; once Redis answers again
the lock is re-taken (not blocking: if another beat took over meanwhile, this one waits) and
the static entries (the sweep, the configured schedules) are written back before anything is
scheduled.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from redbeat import RedBeatScheduler
from redbeat.schedulers import acquire_distributed_beat_lock
from redis.exceptions import LockError, RedisError

from pipeline.log import get_logger

log = get_logger("bulkscribe.beat")

RETRY_S = 1.0


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    _broken = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.lock_key and self.lock is None:
            # Redis was away when beat started: redbeat's beat_init hook swallowed the
            # error and left no lock, which its tick() would trip over.
            self._broken = True
        if self._broken and not self._recover():
            return RETRY_S
        try:
            return float(super().tick(*args, **kwargs))
        except (RedisError, LockError) as exc:
            if not self._broken:
                log.warning("beat.broker_lost", error=f"{type(exc).__name__}: {exc}")
            self._broken = True
            return RETRY_S

    def _recover(self) -> bool:
        """Lock and schedule back in place; False while Redis is away or another beat leads."""
        try:
            if self.lock_key and self.lock is None:
                acquire_distributed_beat_lock(SimpleNamespace(scheduler=self))  # blocks
            elif (
                self.lock is not None
                and not self.lock.owned()
                and not self.lock.acquire(blocking=False)
            ):
                return False
            self.setup_schedule()
        except (RedisError, LockError):
            return False
        self._broken = False
        log.info("beat.broker_back")
        return True

    def close(self) -> None:
        try:
            super().close()
        except (RedisError, LockError) as exc:  # shutting down while Redis is away
            log.warning("beat.close_failed", error=f"{type(exc).__name__}: {exc}")
