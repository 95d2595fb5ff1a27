"""S3-compatible object stores through boto3: AWS S3, MinIO, Alibaba OSS.

OSS speaks the S3 protocol on ``https://oss-<region>.aliyuncs.com`` but wants
virtual-hosted addressing and rejects the CRC checksums newer botocore sends by default,
so checksums are only computed when an operation requires them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import (
    FailureCode,
    MediaRejected,
    PermanentError,
    SourceMissing,
    StorageUnavailable,
)
from pipeline.models import human_bytes
from pipeline.storage.base import ObjectInfo, join_key


def make_client(*, endpoint_url: str | None, oss: bool = False, region: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        signature_version="s3v4",
        s3={"addressing_style": "virtual" if oss else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3Store:
    def __init__(self, bucket: str, prefix: str, client: Any, *, scheme: str = "s3") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.scheme = scheme
        self.url = f"{scheme}://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def put_file(self, path: Path, key: str, *, content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else None
        with _errors(self.uri(key)):
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra)
        return key

    def put_bytes(self, data: bytes, key: str, *, content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else {}
        with _errors(self.uri(key)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        return key

    def get_file(self, key: str, dest: Path, *, max_bytes: int | None = None) -> Path:
        with _errors(self.uri(key)):
            if max_bytes is not None:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                if int(head.get("ContentLength", 0)) > max_bytes:
                    raise MediaRejected(
                        FailureCode.TOO_LARGE,
                        f"{self.uri(key)} is {human_bytes(int(head['ContentLength']))}; "
                        f"the limit is {human_bytes(max_bytes)}",
                    )
            self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def get_bytes(self, key: str) -> bytes:
        with _errors(self.uri(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())

    def exists(self, key: str) -> bool:
        try:
            with _errors(self.uri(key)):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except SourceMissing:
            return False
        return True

    def delete(self, key: str) -> None:
        with _errors(self.uri(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = join_key(self.prefix, prefix)
        if full and (prefix == "" or prefix.endswith("/")):
            full += "/"
        with _errors(f"{self.scheme}://{self.bucket}/{full}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    yield ObjectInfo(
                        key,
                        int(obj.get("Size", 0)),
                        str(obj.get("ETag", "")).strip('"') or None,
                        obj.get("LastModified"),
                    )

    def presign(self, key: str, *, expires_s: int) -> str:
        with _errors(self.uri(key)):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=int(expires_s),
            )
        return url

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{self._key(key)}"


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Map botocore failures once: missing objects, refusals, and outages."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise SourceMissing(f"{what} does not exist") from None
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
            raise StorageUnavailable(
                FailureCode.STORAGE_UNAVAILABLE, f"{what}: {code} ({status})"
            ) from None
        raise PermanentError(FailureCode.STORAGE_ERROR, f"{what}: {code} ({status})") from None
    except BotoCoreError as exc:
        raise StorageUnavailable(
            FailureCode.STORAGE_UNAVAILABLE, f"{what}: {type(exc).__name__}: {exc}"
        ) from None
