"""Object listings as manifests: ``s3://bucket/prefix/`` and S3 Inventory reports.

A prefix is listed page by page (boto3's paginator) and each media object under it is one
row, read as it arrives: a listing of millions of objects is never held in memory. An
inventory report is its ``manifest.json`` (an ``s3://`` URL or a local file) naming CSV.gz
files with ``Bucket`` and ``Key`` columns; each is read as a gzip stream. ``oss://`` goes
through the S3-compatible endpoint (``BULKSCRIBE_S3_ENDPOINT_URL``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from pipeline.inputs.classify import MEDIA_EXTENSIONS, ManifestUnreadable, display

__all__ = ["Client", "inventory_rows", "is_inventory", "is_remote", "listing_rows"]

Client = Callable[[str], Any]  # scheme -> boto3 S3 client
_REMOTE = ("s3://", "oss://")


def is_remote(path: str) -> bool:
    return path.lower().startswith(_REMOTE)


def is_inventory(path: str) -> bool:
    return os.path.basename(path.rstrip("/")) == "manifest.json"


def _split(url: str) -> tuple[str, str, str]:
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ManifestUnreadable(f"{display(url)}: no bucket name")
    return scheme.lower(), bucket, key


def _media(key: str) -> bool:
    return os.path.splitext(key)[1][1:].lower() in MEDIA_EXTENSIONS


def object_url(scheme: str, bucket: str, key: str) -> str:
    return f"{scheme}://{bucket}/{quote(key, safe='/')}"


def listing_rows(url: str, client: Client) -> Iterator[tuple[int, dict[str, Any]]]:
    """(n, {"source": url}) for each media object under the prefix ``url``, in key order."""
    scheme, bucket, prefix = _split(url)
    pages = client(scheme).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    n = 0
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                if _media(obj["Key"]) and not obj["Key"].endswith("/"):
                    n += 1
                    yield n, {"source": object_url(scheme, bucket, obj["Key"])}
    except Exception as e:  # botocore's errors: no such bucket, access denied, no endpoint
        if isinstance(e, ManifestUnreadable):
            raise
        raise ManifestUnreadable(f"cannot list {display(url)}: {e}") from e


def inventory_rows(path: str, client: Client) -> Iterator[tuple[int, dict[str, Any]]]:
    """(n, {"source": url}) for each media object an S3 Inventory report lists."""
    scheme = _split(path)[0] if is_remote(path) else "s3"
    try:
        if is_remote(path):
            _, bucket, key = _split(path)
            raw = client(scheme).get_object(Bucket=bucket, Key=key)["Body"].read()
        else:
            with open(path, "rb") as f:
                raw = f.read(16 * 1024 * 1024)
        report = json.loads(raw)
        schema = [c.strip() for c in str(report["fileSchema"]).split(",")]
        at_bucket, at_key = schema.index("Bucket"), schema.index("Key")
        dest = str(report["destinationBucket"]).rsplit(":", 1)[-1]
        files = [str(f["key"]) for f in report["files"]]
    except ManifestUnreadable:
        raise
    except Exception as e:
        raise ManifestUnreadable(
            f"cannot read S3 Inventory manifest {display(path)}: {type(e).__name__}: {e} "
            "(it needs fileSchema with Bucket and Key, destinationBucket and files)"
        ) from e
    if str(report.get("fileFormat", "CSV")).upper() != "CSV":
        raise ManifestUnreadable(f"{display(path)}: only CSV inventory reports are read")
    n = 0
    for data_key in files:
        try:
            body = client(scheme).get_object(Bucket=dest, Key=data_key)["Body"]
            with gzip.GzipFile(fileobj=body) as gz:
                for row in csv.reader(io.TextIOWrapper(gz, encoding="utf-8", newline="")):
                    if len(row) <= max(at_bucket, at_key):
                        continue
                    key = unquote(row[at_key])  # inventory keys are URL-encoded
                    if _media(key):
                        n += 1
                        yield n, {"source": object_url(scheme, row[at_bucket], key)}
        except Exception as e:
            raise ManifestUnreadable(
                f"cannot read inventory file s3://{dest}/{data_key}: {e}"
            ) from e
