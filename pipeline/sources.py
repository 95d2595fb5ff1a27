"""Turn a manifest source into a local file the probe can read.

Local paths and ``file://`` URLs are used in place; ``http(s)://`` sources are streamed into
scratch space under a size cap and a deadline, with failures mapped to failure codes here.
Object-store sources (``s3://``, ``oss://``) are read through an injected ``ObjectReader``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from pipeline.errors import (
    ConfigError,
    FailureCode,
    MediaRejected,
    PermanentError,
    SourceMissing,
    SourceUnavailable,
)
from pipeline.manifest import display
from pipeline.models import human_bytes


@dataclass(frozen=True, slots=True)
class LocalSource:
    path: Path
    temporary: bool  # downloaded into scratch: delete when done


class ObjectReader(Protocol):
    def download(self, url: str, dest: Path, *, max_bytes: int) -> int: ...


def local_path(source: str) -> Path | None:
    """The filesystem path a source names, or None for remote sources."""
    if source.startswith("file://"):
        raw = unquote_to_bytes(urlsplit(source).path)
        return Path(os.fsdecode(raw))
    if "://" in source:
        return None
    return Path(source)


def source_stamp(source: str) -> str | None:
    """Size and mtime of a local file: a changed file gets transcribed again."""
    path = local_path(source)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def fetch(
    source: str,
    scratch: Path,
    *,
    max_bytes: int,
    http: Callable[[], httpx.Client],
    objects: ObjectReader | None = None,
    deadline_s: float = 3600.0,
) -> LocalSource:
    path = local_path(source)
    if path is not None:
        return LocalSource(path, temporary=False)
    scheme = source.split("://", 1)[0].lower()
    scratch.mkdir(parents=True, exist_ok=True)
    dest = scratch / ("download" + _suffix(source))
    if scheme in ("http", "https"):
        download_http(http(), source, dest, max_bytes=max_bytes, deadline_s=deadline_s)
        return LocalSource(dest, temporary=True)
    if scheme in ("s3", "oss"):
        if objects is None:
            raise ConfigError(
                FailureCode.CONFIG_INVALID,
                f"{source}: {scheme}:// sources need object-store credentials "
                "(BULKSCRIBE_S3_ENDPOINT_URL / AWS_* variables)",
            )
        objects.download(source, dest, max_bytes=max_bytes)
        return LocalSource(dest, temporary=True)
    raise PermanentError(FailureCode.MANIFEST_INVALID, f"{display(source)}: unsupported scheme")


def download_http(
    client: httpx.Client, url: str, dest: Path, *, max_bytes: int, deadline_s: float
) -> int:
    """Stream ``url`` into ``dest``; never more than ``max_bytes``, never past the deadline."""
    try:
        return _stream_to(client, url, dest, max_bytes=max_bytes, deadline_s=deadline_s)
    except BaseException:
        dest.unlink(missing_ok=True)  # never leave half a download behind
        raise


def _stream_to(
    client: httpx.Client, url: str, dest: Path, *, max_bytes: int, deadline_s: float
) -> int:
    started = time.monotonic()
    written = 0
    try:
        with client.stream("GET", url, follow_redirects=True) as resp:
            if resp.status_code in (404, 410):
                raise SourceMissing(f"{url} answered HTTP {resp.status_code}")
            if resp.status_code == 429 or resp.status_code >= 500:
                raise SourceUnavailable(
                    FailureCode.DOWNLOAD_FAILED, f"{url} answered HTTP {resp.status_code}"
                )
            if resp.status_code >= 400:
                raise PermanentError(
                    FailureCode.DOWNLOAD_FAILED, f"{url} answered HTTP {resp.status_code}"
                )
            declared = int(resp.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise _too_large(url, declared, max_bytes)
            with dest.open("wb") as f:
                for chunk in resp.iter_bytes(1 << 16):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_large(url, written, max_bytes, streamed=True)
                    if time.monotonic() - started > deadline_s:
                        raise SourceUnavailable(
                            FailureCode.DOWNLOAD_TIMEOUT,
                            f"{url}: download still running after {deadline_s:.0f} s",
                        )
                    f.write(chunk)
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(
            FailureCode.DOWNLOAD_TIMEOUT, f"{url}: timed out ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise SourceUnavailable(
            FailureCode.DOWNLOAD_FAILED, f"{url}: {type(exc).__name__}: {exc}"
        ) from None
    return written


def _too_large(url: str, size: int, limit: int, *, streamed: bool = False) -> MediaRejected:
    how = "sent more than" if streamed else "is"
    amount = human_bytes(limit if streamed else size)
    return MediaRejected(
        FailureCode.TOO_LARGE, f"{url} {how} {amount}; the limit is {human_bytes(limit)}"
    )


def _suffix(source: str) -> str:
    name = urlsplit(source).path.rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1]
    return ext if ext.isascii() and 1 < len(ext) <= 6 else ""
