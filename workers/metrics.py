"""Prometheus metrics from workers: items by state, stage latencies, provider errors, queues.

Celery's prefork children each count their own; with ``PROMETHEUS_MULTIPROC_DIR`` set (done
by ``bulkscribe worker --metrics-port``) the main process serves the sum over all of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pipeline.ledger.counts import state_totals
from pipeline.states import ItemState
from workers.app import QUEUES

ITEMS_FINISHED = Counter(
    "bulkscribe_items_finished_total", "Items reaching a final state", ["state"]
)
RETRIES = Counter("bulkscribe_item_retries_total", "Transient failures retried", ["code"])
PROVIDER_ERRORS = Counter("bulkscribe_provider_errors_total", "Provider errors", ["code"])
STAGE_SECONDS = Histogram(
    "bulkscribe_stage_seconds",
    "Time spent in a stage",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
ITEMS = Gauge(
    "bulkscribe_items", "Items in the ledger by state", ["state"], multiprocess_mode="mostrecent"
)
QUEUE_DEPTH = Gauge(
    "bulkscribe_queue_depth",
    "Messages waiting in a Celery queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)
SWEEPS = Counter("bulkscribe_sweeps_total", "Sweeps run")


def record(name: str, fields: Mapping[str, Any]) -> None:
    """The FlowContext event hook."""
    if name == "stage.done":
        STAGE_SECONDS.labels(fields.get("stage", "?")).observe(float(fields.get("seconds", 0)))
    elif name == "item.succeeded":
        ITEMS_FINISHED.labels("SUCCEEDED").inc()
    elif name in ("item.failed", "item.dead"):
        ITEMS_FINISHED.labels("DEAD" if name == "item.dead" else "FAILED").inc()
        if str(fields.get("code", "")).startswith("provider_"):
            PROVIDER_ERRORS.labels(fields["code"]).inc()
    elif name == "item.retry":
        RETRIES.labels(fields.get("code", "?")).inc()
        if str(fields.get("code", "")).startswith("provider_"):
            PROVIDER_ERRORS.labels(fields["code"]).inc()
    elif name == "provider.error":
        PROVIDER_ERRORS.labels(fields.get("code", "?")).inc()


def observe_sweep(wctx: Any, *, released: int, queued: int) -> None:
    SWEEPS.inc()
    # item_counts (kept by triggers, folded by the sweep just before), not a count of the
    # items table: a few rows per batch and state, however many million items are done.
    counts = state_totals(wctx.ledger.engine)
    for state in ItemState:
        ITEMS.labels(state.value).set(counts.get(state.value, 0))
    for queue in QUEUES:
        with contextlib.suppress(Exception):
            QUEUE_DEPTH.labels(queue).set(int(wctx.redis.llen(queue)))


def serve(port: int) -> None:
    """Serve metrics on ``port``: the multiprocess sum when children write to a shared dir."""
    from prometheus_client import CollectorRegistry, start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        # prometheus_client ships py.typed, but this constructor has no annotations.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
