"""Worker process start: logging once per process (JSON to stderr for log shippers), and the
worker context built before the first task rather than during it. At shutdown, the jobs held
for packing are sent."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from pipeline.log import configure_logging, get_logger
from workers.app import settings
from workers.context import built_context, worker_context

log = get_logger("bulkscribe.worker")


@setup_logging.connect
def _logging(**_: Any) -> None:
    configure_worker_logging()


def configure_worker_logging() -> None:
    """JSON lines to stderr at the log_level setting. Below debug, Celery's own per-task
    lines ("Task … received", "… succeeded in") are left out: the step lines say that and
    more, once per step."""
    level = settings().log_level
    configure_logging(level=level, stderr_json=True)
    quiet = logging.WARNING if level.lower() != "debug" else logging.NOTSET
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(quiet)


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    # Connections made by the parent must not be shared with a forked child: each pool
    # process builds its own context (the context is kept per pid).
    configure_worker_logging()
    warm_up()


def warm_up() -> None:
    """Build this process's worker context now (imports, ledger, Redis, storage and HTTP
    clients: about half a second of CPU), so the first task neither waits for it nor is
    charged with it. A failure is only logged: the first task builds it again, and its
    retries cover a database or broker that is not up yet."""
    try:
        worker_context()
    except Exception as exc:  # startup must not kill the pool process
        log.warning("worker.context_deferred", error=f"{type(exc).__name__}: {exc}")


@worker_shutdown.connect
@worker_process_shutdown.connect
def _send_held(**_: Any) -> None:
    # Polls waiting a moment for company go out now (lost, the sweeper would send them).
    ctx = built_context()
    if ctx is not None and ctx.held is not None:
        ctx.held.flush()
