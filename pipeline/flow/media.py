"""Normalized audio between stages: kept in an object store, fetched back, published.

Clip engines read windows from a 16 kHz WAV; async providers get FLAC (lossless, about half
the bytes, which keeps an hour under DashScope's 100 MB temporary-upload cap).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

from pipeline.errors import FailureCode, MediaRejected
from pipeline.media import MediaCommandError, run_media
from pipeline.storage import LocalStore, ObjectStore, media_key, sha256_of


def to_flac(wav: Path) -> Path:
    out = wav.with_suffix(".flac")
    try:
        run_media(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "flac", str(out)],
            timeout_s=600,
        )
    except MediaCommandError as exc:
        raise MediaRejected(FailureCode.CORRUPT, f"cannot encode FLAC: {exc}") from None
    return out


class MediaKeeper:
    """Stores prepared audio under a content-addressed key; gives it back as a local file."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def key_for(self, path: Path) -> str:
        return media_key(sha256_of(path), path.suffix)

    def keep(self, path: Path, key: str | None = None) -> str:
        key = key or self.key_for(path)
        if isinstance(self.store, LocalStore):
            target = self.store.path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)  # same disk in embedded runs: a rename, not a copy
        elif not self.store.exists(key):
            self.store.put_file(path, key, content_type=_mime(path))
        return key

    def local(self, key: str, workdir: Path) -> Path:
        if isinstance(self.store, LocalStore):
            return self.store.path(key)
        workdir.mkdir(parents=True, exist_ok=True)
        return self.store.get_file(key, workdir / os.path.basename(key))

    def forget(self, key: str | None) -> None:
        if key:
            self.store.delete(key)


class Publisher(Protocol):
    """Turns stored audio into a URL the provider can fetch."""

    before_claim: bool  # publishing has no side effect, so it may precede the claim

    def publish(self, key: str, keeper: MediaKeeper, workdir: Path, model: str) -> str: ...


def _mime(path: Path) -> str:
    return {".wav": "audio/wav", ".flac": "audio/flac"}.get(path.suffix, "application/octet-stream")
