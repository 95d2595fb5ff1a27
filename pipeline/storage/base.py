"""The object-store contract shared by local directories, S3 and Alibaba OSS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    etag: str | None = None
    modified: datetime | None = None


class ObjectStore(Protocol):
    """Keys are '/'-separated and relative to the store's base URL."""

    url: str

    def put_file(self, path: Path, key: str, *, content_type: str | None = None) -> str: ...
    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> str: ...
    def get_file(self, key: str, dest: Path, *, max_bytes: int | None = None) -> Path: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def presign(self, key: str, *, expires_s: int) -> str: ...
    def uri(self, key: str) -> str: ...


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def media_key(digest: str, suffix: str) -> str:
    """Content-addressed key for normalized audio: the same audio is stored once."""
    return f"media/{digest[:2]}/{digest}{suffix}"


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
