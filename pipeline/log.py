"""structlog setup: JSON lines to a file, human lines to stderr, secrets never printed.

Configured once per process (CLI or worker start). Every line carries the context bound
with ``bound_contextvars`` (batch_id, item_id, attempt, stage), so it names its file.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(api[_-]?key|secret|password|token|authorization)", re.I)
_SECRET_VALUES = re.compile(r"\b(sk-[A-Za-z0-9]{6})[A-Za-z0-9-_]+")


def redact_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A pure dict -> dict step: secret-looking keys masked, API keys in text shortened."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and value:
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = _SECRET_VALUES.sub(r"\1***", value)
    return event


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now, so rich's live progress can redirect it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _NoFollowFileHandler(logging.FileHandler):
    """Appends to a regular file, never through a symbolic link planted in its place (the
    log lives in ``--out``, which others may be able to write to)."""

    def _open(self) -> Any:
        from pipeline.outdir import open_regular

        path = Path(self.baseFilename)
        fd = open_regular(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, dir_fd=None,
                          shown=path)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


def configure_logging(*, level: str = "warning", json_file: Path | None = None,
                      stderr_json: bool = False) -> None:
    """Route structlog through stdlib logging to stderr (and a JSON file if given)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_bulkscribe", False):
            root.removeHandler(h)
            h.close()
    console = _CurrentStderr()
    console.setLevel(level.upper())
    renderer = (structlog.processors.JSONRenderer() if stderr_json
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    console.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=_SHARED))
    handlers: list[logging.Handler] = [console]
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        fh = _NoFollowFileHandler(json_file, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.dict_tracebacks,
                        structlog.processors.JSONRenderer(ensure_ascii=False)],
            foreign_pre_chain=_SHARED))
        handlers.append(fh)
    for h in handlers:
        h._bulkscribe = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(min(h.level for h in handlers))
    # Libraries that are chatty at INFO stay at WARNING.
    for noisy in ("httpx", "httpcore", "faster_whisper", "botocore", "boto3", "urllib3",
                  "alembic", "celery.redirected"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
