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
from urllib.parse import unquote

import structlog

_SECRET_KEYS = re.compile(r"(api[_-]?key|secret|password|token|authorization)", re.I)
_SECRET_VALUES = re.compile(r"\b(sk-[A-Za-z0-9]{6})[A-Za-z0-9-_]+")
MASK = "***"

# Query parameters whose value lets whoever reads the URL fetch with someone else's rights:
# bearer tokens and API keys, passwords, and the signatures and credentials of presigned
# URLs (S3 ``X-Amz-Signature``/``-Credential``/``-Security-Token``, OSS ``Signature``/
# ``OSSAccessKeyId``/``security-token``, GCS ``X-Goog-Signature``, Azure SAS ``sig``).
# Expiry, date and algorithm fields (``Expires``, ``X-Amz-Date``, ``se``) say nothing secret
# and help when reading a failure, so they stay.
_SECRET_PARAM_PARTS = re.compile(r"token|secret|passw|signature|credential", re.I)
_SECRET_PARAMS = frozenset(
    {
        "sig",
        "key",
        "apikey",
        "api_key",
        "api-key",
        "auth",
        "authorization",
        "pass",
        "pwd",
        "ossaccesskeyid",
        "awsaccesskeyid",
        "accesskeyid",
        "access_key",
        "accesskey",
    }
)
# A URL in running text ends before trailing punctuation ("...?token=x: refused").
_URL_IN_TEXT = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s\"'<>\x1b]*[^\s\"'<>\x1b.,;:!?)\]]"
)


def _secret_param(name: str) -> bool:
    name = unquote(name).strip().lower()
    return name in _SECRET_PARAMS or bool(_SECRET_PARAM_PARTS.search(name))


def redact_url(url: str) -> str:
    """``url`` as it may be shown or stored for display: user info and secret query values
    replaced by ``***``. Everything else is kept byte for byte, so a URL without secrets
    comes back unchanged (and ledger fingerprints of such items do not move)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.replace("+", "").replace(".", "").replace("-", "").isalnum():
        return url
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = MASK + "@" + authority.rpartition("@")[2]
    if "?" in tail:
        path, _, query = tail.partition("?")
        query, hash_, fragment = query.partition("#")
        pairs = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            pairs.append(f"{name}={MASK}" if eq and value and _secret_param(name) else pair)
        tail = f"{path}?{'&'.join(pairs)}{hash_}{fragment}"
    return f"{scheme}://{authority}{tail}"


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted (see :func:`redact_url`), API keys shortened."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _SECRET_VALUES.sub(r"\1***", text)


def redact_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A pure dict -> dict step: secret-looking keys masked, URLs and API keys in text
    redacted."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and value:
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


def _redact_rendered(_logger: Any, _name: str, line: Any) -> Any:
    """After rendering: URLs in what no field-level step saw (a traceback's exception text)."""
    return redact_text(line) if isinstance(line, str) else line


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now, so rich's live progress can redirect it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _NoFollowFileHandler(logging.FileHandler):
    """Appends to a regular file, never through a symbolic link planted in its place (the
    log lives in ``--out``, which others may be able to write to)."""

    def _open(self) -> Any:
        from pipeline.outputs.outdir import open_regular

        path = Path(self.baseFilename)
        fd = open_regular(
            str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, dir_fd=None, shown=path
        )
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


def configure_logging(
    *, level: str = "warning", json_file: Path | None = None, stderr_json: bool = False
) -> None:
    """Route structlog through stdlib logging to stderr (and a JSON file if given)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_bulkscribe", False):
            root.removeHandler(h)
            h.close()
    console = _CurrentStderr()
    console.setLevel(level.upper())
    renderer = (
        structlog.processors.JSONRenderer()
        if stderr_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                _redact_rendered,
            ],
            foreign_pre_chain=_SHARED,
        )
    )
    handlers: list[logging.Handler] = [console]
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        fh = _NoFollowFileHandler(json_file, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.dict_tracebacks,
                    structlog.processors.JSONRenderer(ensure_ascii=False),
                    _redact_rendered,
                ],
                foreign_pre_chain=_SHARED,
            )
        )
        handlers.append(fh)
    for h in handlers:
        h._bulkscribe = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(min(h.level for h in handlers))
    # Libraries that are chatty at INFO stay at WARNING.
    for noisy in (
        "httpx",
        "httpcore",
        "faster_whisper",
        "botocore",
        "boto3",
        "urllib3",
        "alembic",
        "celery.redirected",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        # A line below the logger's level is dropped first, before the context merge, the
        # timestamp and the redaction regexes run for nothing (the worker's per-item lines
        # at the default warning level: about 0.1 ms each).
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _StderrFile:
    """sys.stderr as it is when a line is written (tests and callers may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get_logger(name: str) -> Any:
    if not structlog.is_configured():
        # Until configure_logging() runs (the engine used as a library, benchmarks, helper
        # processes), lines go to stderr: structlog's own default, stdout, would mix them
        # into a program's output.
        stderr: Any = _StderrFile()
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(stderr))
    return structlog.get_logger(name)
