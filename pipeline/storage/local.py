"""A directory as an object store (``file:///dir``): embedded runs and single-host setups."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import FailureCode, MediaRejected, PermanentError, SourceMissing
from pipeline.models import human_bytes
from pipeline.storage.base import ObjectInfo


def _temp_beside(target: Path) -> Path:
    # A fixed-length name: a key whose last part is near NAME_MAX must still get a temp file.
    return target.with_name(f".bulkscribe-{os.getpid()}-{secrets.token_hex(4)}.tmp")


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise PermanentError(FailureCode.STORAGE_ERROR, f"key {key!r} escapes {self.root}")
        return target

    def put_file(self, path: Path, key: str, *, content_type: str | None = None) -> str:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(target)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        return key

    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> str:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(target)
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return key

    def get_file(self, key: str, dest: Path, *, max_bytes: int | None = None) -> Path:
        src = self.path(key)
        if not src.is_file():
            raise SourceMissing(f"{self.uri(key)} does not exist")
        if max_bytes is not None and src.stat().st_size > max_bytes:
            raise MediaRejected(
                FailureCode.TOO_LARGE,
                f"{self.uri(key)} is over the limit of {human_bytes(max_bytes)}",
            )
        shutil.copyfile(src, dest)
        return dest

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise SourceMissing(f"{self.uri(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                p = Path(dirpath) / name
                st = p.stat()
                yield ObjectInfo(
                    p.relative_to(self.root).as_posix(),
                    st.st_size,
                    f"{st.st_size}-{st.st_mtime_ns}",
                    datetime.fromtimestamp(st.st_mtime, UTC),
                )

    def presign(self, key: str, *, expires_s: int) -> str:
        # A provider cannot fetch a file:// URL; callers that need one use an S3/OSS store
        # or DashScope's temporary upload instead.
        return self.uri(key)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()
