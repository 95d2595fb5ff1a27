"""One FlowContext per worker process, built on first use after the fork.

Database engines, HTTP pools and Redis clients must not cross a fork, so nothing here is
created in the parent; a forked child notices the pid change and builds its own.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from pipeline.errors import ConfigError, FailureCode
from pipeline.flow.context import FlowContext
from pipeline.flow.outputs import DirSink, OutputSink, StoreSink, cue_layout
from pipeline.flow.policy import SchedulePolicy, Scheduler
from pipeline.ledger import Ledger, open_ledger
from pipeline.log import get_logger
from pipeline.notify.outbox import add_dead, batch_urls
from pipeline.outputs.results import close_batch
from pipeline.planning.pricing import PriceTable
from pipeline.settings import NotifySettings, Settings
from pipeline.storage import open_store, split_url
from pipeline.wiring import build_context, http_client, media_store
from workers import metrics
from workers.app import app
from workers.app import settings as app_settings
from workers.coalesce import Coalescer
from workers.limits import RedisGate, RedisTokenBucket

log = get_logger("bulkscribe.worker")


@dataclass
class WorkerContext:
    settings: Settings
    flow: FlowContext
    redis: Any
    scheduler: Scheduler
    gate: RedisGate
    held: Coalescer | None = None  # polls waiting a moment for company (workers.dispatch)

    @property
    def ledger(self) -> Ledger:
        return self.flow.ledger


_ctx: WorkerContext | None = None
_pid: int | None = None
_lock = threading.Lock()


def worker_context(settings: Settings | None = None) -> WorkerContext:
    global _ctx, _pid
    with _lock:
        if _ctx is None or _pid != os.getpid():
            _ctx = build_worker_context(settings or app_settings())
            _pid = os.getpid()
        return _ctx


def built_context() -> WorkerContext | None:
    """This process's context if it has been built (nothing is built here)."""
    with _lock:
        return _ctx if _pid == os.getpid() else None


def database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            "distributed mode needs BULKSCRIBE_DATABASE_URL (PostgreSQL)",
        )
    return settings.database_url


class BatchSinks:
    """Each batch writes where its submitter asked (a directory or an s3:// prefix)."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.settings = settings
        self._sinks: dict[str, OutputSink] = {}

    def __call__(self, batch_id: str) -> OutputSink:
        sink = self._sinks.get(batch_id)
        if sink is None:
            batch = self.ledger.batch(batch_id) or {}
            sink = self._sinks[batch_id] = sink_for(str(batch.get("out") or ""), self.settings)
        return sink


def sink_for(out: str, settings: Settings) -> OutputSink:
    if "://" in out and not out.startswith("file://"):
        scheme, bucket, prefix = split_url(out)
        store = open_store(f"{scheme}://{bucket}", endpoint_url=settings.s3_endpoint_url)
        return StoreSink(store, prefix, cue_layout(settings.subtitles))
    path = Path(out.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    return DirSink(path, cue_layout(settings.subtitles))


NOTIFY_TASK = "bulkscribe.notify"


def queue_notify() -> None:
    """Queue a delivery of the due webhooks (``bulkscribe.notify``, on the provider queue);
    claims in the outbox make a second copy of the task harmless."""
    app.send_task(NOTIFY_TASK)


class BatchCloser:
    """``FlowContext.item_finished``: the worker that finishes a batch's last item writes
    its results.jsonl and marks it done at once (the sweeper does it too, as a safety net;
    a compare-and-set on the batch lets exactly one of them write).

    The close commits the batch's ``batch.completed`` with it; the closer then queues its
    delivery at once (``wake_notify``) instead of leaving it to the next sweep. If that
    message is never sent (the worker dies in between, the broker is away), the sweep
    still finds the event due and queues it."""

    def __init__(
        self,
        ledger: Ledger,
        sinks: BatchSinks,
        owner: str,
        notify: NotifySettings,
        prices: PriceTable | None = None,
        wake_notify: Callable[[], None] = queue_notify,
    ) -> None:
        self.ledger = ledger
        self.sinks = sinks
        self.owner = owner
        self.notify = notify
        self.prices = prices  # batch.completed's cost
        self.wake_notify = wake_notify

    def __call__(self, batch_id: str) -> None:
        try:
            closed = close_batch(
                self.ledger,
                batch_id,
                self.sinks(batch_id),
                owner=self.owner,
                notify=self.notify,
                prices=self.prices,
            )
        except Exception as exc:  # the item is finished; the sweeper writes the results
            log.warning(
                "batch.close_failed", batch_id=batch_id, error=f"{type(exc).__name__}: {exc}"
            )
            return
        if not closed:
            return
        log.info("batch.done", batch_id=batch_id)
        try:
            # A batch with no endpoint wrote no event: nothing to deliver.
            if batch_urls(self.ledger.batch(batch_id), self.notify):
                self.wake_notify()
        except Exception as exc:  # the event is in the outbox; the next sweep queues it
            log.warning(
                "notify.queue_failed", batch_id=batch_id, error=f"{type(exc).__name__}: {exc}"
            )


def build_worker_context(settings: Settings) -> WorkerContext:
    ledger = open_ledger(database_url(settings))
    # An item's batch.items_dead is written in the transaction that moves it to DEAD.
    ledger.on_dead = partial(add_dead, notify=settings.notify)
    r = redis.Redis.from_url(settings.broker_url)
    scratch = Path(tempfile.mkdtemp(prefix="bulkscribe-worker-", dir=settings.scratch_dir))
    # Without BULKSCRIBE_STORAGE_URL, workers on one host share a local directory.
    shared = Path(settings.scratch_dir or tempfile.gettempdir()) / "bulkscribe-media"
    store = media_store(settings, shared)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    sinks = BatchSinks(ledger, settings)
    policy = SchedulePolicy.from_settings(settings)
    gate = RedisGate(r, settings.provider.max_inflight_tasks, ledger.inflight_tasks)
    flow = build_context(
        settings,
        ledger=ledger,
        owner=owner,
        sinks=sinks,
        scratch=scratch,
        store=store,
        http=http_client(settings),
        dead_letters=True,
        limiter=RedisTokenBucket(r, settings.provider.requests_per_s),
        gate=gate,
        lease_s=settings.distributed.lease_s,
        events=metrics.record,
        handoff_s=settings.distributed.redispatch_s,
        hands_off=policy.hands_off,
        item_finished=BatchCloser(ledger, sinks, owner, settings.notify, PriceTable.of(settings)),
    )
    return WorkerContext(settings, flow, r, Scheduler(policy, ledger), gate)
