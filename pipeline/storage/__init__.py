"""Object stores: where normalized audio waits for a provider and where results can go.

``open_store("s3://bucket/prefix")``, ``oss://bucket/prefix`` (Alibaba OSS through its
S3-compatible endpoint) or ``file:///dir``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError, FailureCode
from pipeline.storage.base import ObjectInfo, ObjectStore, join_key, media_key, sha256_of
from pipeline.storage.local import LocalStore
from pipeline.storage.s3 import S3Store, make_client

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "join_key",
    "media_key",
    "open_store",
    "sha256_of",
    "split_url",
]


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` → ("s3", "bucket", "a/b")."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc, unquote(parts.path).lstrip("/")


def open_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    client: object | None = None,
    region: str | None = None,
) -> ObjectStore:
    scheme, bucket, prefix = split_url(url)
    if scheme == "file":
        return LocalStore(Path(unquote(urlsplit(url).path)))
    if scheme in ("s3", "oss"):
        if not bucket:
            raise ConfigError(FailureCode.CONFIG_INVALID, f"{url}: no bucket name")
        if scheme == "oss" and endpoint_url is None:
            raise ConfigError(
                FailureCode.CONFIG_INVALID,
                "oss:// needs BULKSCRIBE_S3_ENDPOINT_URL, e.g. "
                "https://oss-ap-southeast-1.aliyuncs.com",
            )
        s3 = client or make_client(endpoint_url=endpoint_url, oss=scheme == "oss", region=region)
        return S3Store(bucket, prefix, s3, scheme=scheme)
    raise ConfigError(
        FailureCode.CONFIG_INVALID,
        f"storage URL {url!r}: use s3://bucket/prefix, oss://bucket/prefix or file:///dir",
    )
