"""Worker process start: logging once per process, JSON to stderr for log shippers."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_process_init

from pipeline.log import configure_logging


@setup_logging.connect
def _logging(**_: Any) -> None:
    from workers.app import settings

    configure_logging(level=settings().log_level, stderr_json=True)


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    # Connections made by the parent must not be shared with a forked child; the worker
    # context is built lazily per pid, so there is nothing to reset here beyond logging.
    from workers.app import settings

    configure_logging(level=settings().log_level, stderr_json=True)
