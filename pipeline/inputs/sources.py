"""Turn a manifest source into a local file the probe can read.

Local paths and ``file://`` URLs are used in place; ``http(s)://`` sources are streamed into
scratch space under a size cap and a wall-clock deadline, redirects followed by hand through
the address policy (:mod:`pipeline.inputs.netguard`), with failures mapped to failure codes here.
Object-store sources (``s3://``, ``oss://``) are read through an injected ``ObjectReader``.
Every message names the source as :func:`pipeline.inputs.manifest.display` shows it: credentials
masked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from pipeline.errors import (
    ConfigError,
    FailureCode,
    MediaRejected,
    PermanentError,
    PipelineError,
    SourceMissing,
    SourceRefused,
    SourceUnavailable,
)
from pipeline.inputs.manifest import display
from pipeline.inputs.netguard import AddressPolicy, AddressRefused, Deadline
from pipeline.log import redact_text
from pipeline.models import human_bytes
from pipeline.settings import DownloadSettings

# A whole download, first byte to last (DownloadSettings.deadline_s has the reasoning).
DEFAULT_DEADLINE_S = DownloadSettings().deadline_s
# Browsers stop at 20, curl at 50; media links rarely take more than two or three hops.
MAX_REDIRECTS = 10
DEFAULT_POLICY = AddressPolicy()  # private addresses allowed, metadata and link-local not


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
    # A plain path (most lines of a long manifest) is stat'ed as the string it is.
    path = source if "://" not in source else local_path(source)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: an embedded NUL byte
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def local_missing(source: str) -> bool:
    """True when a source names a local path that does not exist (not: unreadable)."""
    path = local_path(source)
    if path is None:
        return False
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False  # the probe says what is wrong with it
    return False


def fetch(
    source: str,
    scratch: Path,
    *,
    max_bytes: int,
    http: Callable[[], httpx.Client],
    objects: ObjectReader | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
    policy: AddressPolicy = DEFAULT_POLICY,
) -> LocalSource:
    path = local_path(source)
    if path is not None:
        return LocalSource(path, temporary=False)
    scheme = source.split("://", 1)[0].lower()
    scratch.mkdir(parents=True, exist_ok=True)
    dest = scratch / ("download" + _suffix(source))
    if scheme in ("http", "https"):
        download_http(
            http(), source, dest, max_bytes=max_bytes, deadline_s=deadline_s, policy=policy
        )
        return LocalSource(dest, temporary=True)
    if scheme in ("s3", "oss"):
        if objects is None:
            raise ConfigError(
                FailureCode.CONFIG_INVALID,
                f"{display(source)}: {scheme}:// sources need object-store credentials "
                "(BULKSCRIBE_S3_ENDPOINT_URL / AWS_* variables)",
            )
        objects.download(source, dest, max_bytes=max_bytes)
        return LocalSource(dest, temporary=True)
    raise PermanentError(FailureCode.MANIFEST_INVALID, f"{display(source)}: unsupported scheme")


def download_http(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    deadline_s: float,
    policy: AddressPolicy = DEFAULT_POLICY,
) -> int:
    """Stream ``url`` into ``dest``: never more than ``max_bytes``, never past the deadline
    (a watchdog, so a trickling server cannot stretch it), redirects followed only to
    http(s) URLs the address policy allows. Messages name the URL redacted."""
    try:
        with Deadline(deadline_s) as deadline:
            try:
                written = _follow(
                    client, url, dest, max_bytes=max_bytes, policy=policy, deadline=deadline
                )
            except (httpx.TransportError, PipelineError):
                if deadline.expired:
                    raise _timed_out(url, deadline_s) from None
                raise
            if deadline.expired:  # a body read to "the end" the watchdog made
                raise _timed_out(url, deadline_s)
            return written
    except BaseException:
        dest.unlink(missing_ok=True)  # never leave half a download behind
        raise


def _follow(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    policy: AddressPolicy,
    deadline: Deadline,
) -> int:
    """GET ``url``, following redirects by hand so that every hop is checked."""
    seen = {url}
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            policy.check_host(httpx.URL(current).host)
        except AddressRefused as exc:
            raise _refused(url, exc.message) from None
        except httpx.InvalidURL as exc:
            raise _refused(url, f"not a valid URL ({exc})") from None
        location = _stream_to(client, current, dest, max_bytes=max_bytes, deadline=deadline)
        if location is None:
            return dest.stat().st_size
        target = urljoin(current, location)
        scheme = target.split(":", 1)[0].lower() if ":" in target else ""
        if scheme not in ("http", "https"):
            raise _refused(
                url,
                f"redirected to a {scheme or 'schemeless'} URL "
                f"({display(target)}); only http and https are followed",
            )
        if target in seen:
            raise _refused(url, f"redirect loop back to {display(target)}")
        seen.add(target)
        current = target
    raise _refused(url, f"more than {MAX_REDIRECTS} redirects")


def _stream_to(
    client: httpx.Client, url: str, dest: Path, *, max_bytes: int, deadline: Deadline
) -> str | None:
    """One request: the body into ``dest``, or the Location of a redirect (not followed)."""
    shown = display(url)
    written = 0
    try:
        with client.stream("GET", url, follow_redirects=False) as resp:
            if resp.is_redirect:
                return resp.headers["location"]
            if resp.status_code in (404, 410):
                raise SourceMissing(f"{shown} answered HTTP {resp.status_code}")
            if resp.status_code == 429 or resp.status_code >= 500:
                raise SourceUnavailable(
                    FailureCode.DOWNLOAD_FAILED, f"{shown} answered HTTP {resp.status_code}"
                )
            if resp.status_code >= 300:
                raise PermanentError(
                    FailureCode.DOWNLOAD_FAILED, f"{shown} answered HTTP {resp.status_code}"
                )
            declared = int(resp.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise _too_large(shown, declared, max_bytes)
            with dest.open("wb") as f:
                for chunk in resp.iter_bytes(1 << 16):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_large(shown, written, max_bytes, streamed=True)
                    if deadline.expired:  # transports the watchdog cannot reach (tests)
                        raise _timed_out(url, deadline.seconds)
                    f.write(chunk)
    except AddressRefused as exc:
        raise _refused(url, exc.message) from None
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(
            FailureCode.DOWNLOAD_TIMEOUT, f"{shown}: timed out ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise SourceUnavailable(
            FailureCode.DOWNLOAD_FAILED, f"{shown}: {type(exc).__name__}: {redact_text(str(exc))}"
        ) from None
    return None


def _timed_out(url: str, deadline_s: float) -> SourceUnavailable:
    return SourceUnavailable(
        FailureCode.DOWNLOAD_TIMEOUT,
        f"{display(url)}: timed out: the download was still running at its "
        f"{deadline_s:g} s deadline (download.deadline_s)",
    )


def _refused(url: str, why: str) -> SourceRefused:
    return SourceRefused(f"{display(url)}: {why}")


def _too_large(shown: str, size: int, limit: int, *, streamed: bool = False) -> MediaRejected:
    how = "sent more than" if streamed else "is"
    amount = human_bytes(limit if streamed else size)
    return MediaRejected(
        FailureCode.TOO_LARGE, f"{shown} {how} {amount}; the limit is {human_bytes(limit)}"
    )


def _suffix(source: str) -> str:
    name = urlsplit(source).path.rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1]
    return ext if ext.isascii() and 1 < len(ext) <= 6 else ""
