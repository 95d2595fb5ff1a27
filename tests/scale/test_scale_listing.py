"""Object listings as manifests: an s3:// prefix listed page by page, and an S3 Inventory
report (manifest.json naming CSV.gz files), served by moto."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from scale_support import BIN, bulkscribe, sql

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3, pytest.mark.slow]

N_MEDIA = 2_500  # over two pages of list_objects_v2 (1,000 keys each)


def s3(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def bucket(moto_url: str) -> str:
    client = s3(moto_url)
    client.create_bucket(Bucket="archive")
    keys = [f"calls/day{i % 7}/call {i:05d}.wav" for i in range(N_MEDIA)]
    keys += [f"calls/day{i}/notes.txt" for i in range(7)] + ["other/skip.wav"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket="archive", Key=k, Body=b"x"), keys))
    return "archive"


def _env(env: dict[str, str], moto_url: str) -> dict[str, str]:
    return {**env, "BULKSCRIBE_S3_ENDPOINT_URL": moto_url}


def test_prefix_listed_as_manifest(
    tmp_path: Path, env: dict[str, str], moto_url: str, bucket: str
) -> None:
    """Media objects under the prefix only, ids relative to it, sources as s3:// URLs."""
    out = bulkscribe(
        _env(env, moto_url), "submit", f"s3://{bucket}/calls/", "--out", str(tmp_path / "out")
    )
    assert (out["total"], out["created"], out["duplicates"]) == (N_MEDIA, N_MEDIA, 0)
    url = env["BULKSCRIBE_DATABASE_URL"]
    rows = dict(sql(url, "SELECT key, source FROM items"))
    assert len(rows) == N_MEDIA
    assert rows["day3/call_00010"] == f"s3://{bucket}/calls/day3/call%2000010.wav"
    assert not any("notes" in k or "skip" in k for k in rows)
    assert sql(url, "SELECT manifest FROM batches") == [(f"s3://{bucket}/calls/",)]


def _inventory(client: Any, bucket: str) -> dict[str, Any]:
    """An inventory report of the bucket in two CSV.gz files, stored beside it."""
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if o["Key"].startswith("calls/")
    ]
    files = []
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        buf = io.StringIO()
        for k in part:  # keys URL-encoded, as S3 Inventory writes them
            buf.write(f'"{bucket}","{k.replace(" ", "%20")}","1"\n')
        key = f"inventory/data/part-{n}.csv.gz"
        client.put_object(Bucket="archive", Key=key, Body=gzip.compress(buf.getvalue().encode()))
        files.append({"key": key, "size": 1, "MD5checksum": "x"})
    report = {
        "sourceBucket": bucket,
        "destinationBucket": "arn:aws:s3:::archive",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": files,
    }
    client.put_object(
        Bucket="archive", Key="inventory/manifest.json", Body=json.dumps(report).encode()
    )
    return report


def test_inventory_report_as_manifest(
    tmp_path: Path, env: dict[str, str], moto_url: str, bucket: str
) -> None:
    """From s3://.../manifest.json, and the same report saved locally."""
    report = _inventory(s3(moto_url), bucket)
    out = bulkscribe(
        _env(env, moto_url),
        "submit",
        "s3://archive/inventory/manifest.json",
        "--out",
        str(tmp_path / "a"),
    )
    assert (out["total"], out["created"]) == (N_MEDIA, N_MEDIA)
    local = tmp_path / "manifest.json"
    local.write_text(json.dumps(report))
    out2 = bulkscribe(_env(env, moto_url), "submit", str(local), "--out", str(tmp_path / "b"))
    assert out2["created"] == N_MEDIA
    url = env["BULKSCRIBE_DATABASE_URL"]
    sources = sql(url, "SELECT DISTINCT source FROM items WHERE key = 'calls/day3/call_00010'")
    assert sources == [(f"s3://{bucket}/calls/day3/call%2000010.wav",)]


def test_unreadable_listing_is_a_usage_error(
    tmp_path: Path, env: dict[str, str], moto_url: str
) -> None:
    proc = subprocess.run(
        [str(BIN / "bulkscribe"), "submit", "s3://no-such-bucket/x/", "--out", str(tmp_path / "o")],
        env=_env(env, moto_url),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "cannot list s3://no-such-bucket/x/" in proc.stderr
    # refused before anything was written: not even the ledger's tables were made
    assert sql(env["BULKSCRIBE_DATABASE_URL"], "SELECT to_regclass('batches')") == [(None,)]


# OSS wants virtual-hosted addressing (bucket.oss-<region>.aliyuncs.com), which moto on
# 127.0.0.1 cannot be reached by name for: moto serves as the HTTP proxy instead, so every
# request keeps OSS's own host name (and moto finds the bucket in it), and nothing leaves
# the machine.
OSS_ENDPOINT = "http://oss-cn-hangzhou.aliyuncs.com"


def _oss_env(env: dict[str, str], moto_url: str) -> dict[str, str]:
    return {
        **env,
        "BULKSCRIBE_S3_ENDPOINT_URL": OSS_ENDPOINT,
        "HTTP_PROXY": moto_url,
        "http_proxy": moto_url,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def test_oss_prefix_listed_as_manifest(
    tmp_path: Path, env: dict[str, str], moto_url: str, bucket: str
) -> None:
    """``submit oss://bucket/prefix/`` lists it through the OSS endpoint (virtual-hosted
    addressing): the same media objects and ids as over S3, sources as oss:// URLs."""
    out = bulkscribe(
        _oss_env(env, moto_url), "submit", f"oss://{bucket}/calls/", "--out", str(tmp_path / "o")
    )
    assert (out["total"], out["created"], out["duplicates"]) == (N_MEDIA, N_MEDIA, 0)
    rows = dict(sql(env["BULKSCRIBE_DATABASE_URL"], "SELECT key, source FROM items"))
    assert len(rows) == N_MEDIA
    assert rows["day3/call_00010"] == f"oss://{bucket}/calls/day3/call%2000010.wav"
    assert all(s.startswith(f"oss://{bucket}/calls/") for s in rows.values())


def test_oss_listing_is_paged_and_streamed(
    monkeypatch: pytest.MonkeyPatch, moto_url: str, bucket: str
) -> None:
    """The first row arrives after one list request; all 2,500 after three (1,000 keys a
    page), each addressed to bucket.oss-cn-hangzhou.aliyuncs.com."""
    from pipeline.inputs.listing import listing_rows
    from pipeline.storage import make_client

    for name, value in _oss_env({}, moto_url).items():
        monkeypatch.setenv(name, value)
    client = make_client(endpoint_url=OSS_ENDPOINT, oss=True, region="cn-hangzhou")
    hosts: list[str] = []
    client.meta.events.register(
        "before-send.s3.ListObjectsV2", lambda request, **_: hosts.append(request.url)
    )
    rows = listing_rows(f"oss://{bucket}/calls/", lambda scheme: client)
    first = next(rows)
    assert first == (1, {"source": f"oss://{bucket}/calls/day0/call%2000000.wav"})
    assert len(hosts) == 1
    rest = list(rows)
    assert len(rest) == N_MEDIA - 1 and rest[-1][0] == N_MEDIA
    assert len(hosts) == 3
    assert all(h.startswith(f"http://{bucket}.oss-cn-hangzhou.aliyuncs.com/") for h in hosts)
