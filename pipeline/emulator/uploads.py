"""Temporary uploads: the getPolicy answer, OSS PostObject checks, and the ``oss://`` store.

The SDK asks ``GET /api/v1/uploads?action=getPolicy`` for a policy, posts the file as an OSS
PostObject form to ``upload_host`` (here: the emulator itself) and then sends
``oss://<key>``. The policy is signed like OSS does (HMAC-SHA1 over the base64 policy) with a
per-process secret, so a form that was not issued by this emulator, or came too late, or
names a key outside its directory, is refused the way OSS would refuse it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

POLICY_TTL_S = 300
ACCESS_KEY_ID = "LTAI-bulkscribe-emulator"
UPLOAD_PATH = "/_oss/upload"  # upload_host = public base URL + this


class UploadRejected(Exception):
    """An upload OSS would refuse: HTTP status, OSS error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _sign(secret: bytes, policy_b64: str) -> str:
    return base64.b64encode(hmac.new(secret, policy_b64.encode(), hashlib.sha1).digest()).decode()


def make_policy(
    secret: bytes, *, model: str, now: float, upload_host: str, max_file_size_mb: int
) -> dict[str, Any]:
    """The ``data`` object of a getPolicy answer: the ten keys the SDK reads (§6)."""
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    upload_dir = f"dashscope-instant/{hashlib.md5(model.encode()).hexdigest()}/{day}/{uuid.uuid4()}"
    expiration = datetime.fromtimestamp(now + POLICY_TTL_S, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    doc = {
        "expiration": expiration,
        "conditions": [
            ["starts-with", "$key", upload_dir],
            ["content-length-range", 0, max_file_size_mb * 1024 * 1024],
        ],
    }
    policy = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    return {
        "policy": policy,
        "signature": _sign(secret, policy),
        "upload_dir": upload_dir,
        "upload_host": upload_host,
        "expire_in_seconds": POLICY_TTL_S,
        "max_file_size_mb": max_file_size_mb,
        "capacity_limit_mb": 999_999_999,
        "oss_access_key_id": ACCESS_KEY_ID,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }


@dataclass(frozen=True, slots=True)
class AcceptedPost:
    key: str
    max_bytes: int
    forbid_overwrite: bool


def check_post(fields: Mapping[str, str], secret: bytes, now: float) -> AcceptedPost:
    """Judge a PostObject form's text fields like OSS: signature, expiry, key prefix."""
    for name in ("OSSAccessKeyId", "Signature", "policy", "key"):
        if not fields.get(name):
            raise UploadRejected(400, "InvalidArgument", f"missing form field {name}")
    policy = fields["policy"]
    if not hmac.compare_digest(fields["Signature"], _sign(secret, policy)):
        raise UploadRejected(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    doc = json.loads(base64.b64decode(policy))
    expires = datetime.strptime(doc["expiration"], "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=UTC)
    if now > expires.timestamp():
        raise UploadRejected(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    max_bytes = 0
    for cond in doc["conditions"]:
        if cond[0] == "starts-with" and not fields["key"].startswith(cond[2]):
            raise UploadRejected(
                403,
                "AccessDenied",
                "Invalid according to Policy: Policy Condition failed: "
                '["starts-with", "$key", "' + cond[2] + '"]',
            )
        if cond[0] == "content-length-range":
            max_bytes = int(cond[2])
    forbid = fields.get("x-oss-forbid-overwrite", "false").lower() == "true"
    return AcceptedPost(fields["key"], max_bytes, forbid)


def oss_error_xml(code: str, message: str, request_id: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n</Error>\n"
    )


class UploadStore:
    """Uploaded objects on local disk, by key, each for ``ttl_s``; thread-safe."""

    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._objects: dict[str, tuple[Path, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def exists(self, key: str, now: float) -> bool:
        return self.path(key, now) is not None

    def put(self, key: str, data: BinaryIO, now: float) -> int:
        """Store the stream under ``key``; returns its size. Runs in a worker thread."""
        suffix = Path(key).suffix if len(Path(key).suffix) <= 8 else ""
        dest = self.root / (hashlib.sha256(key.encode()).hexdigest() + suffix)
        self.root.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)
        with self._lock:
            self._objects[key] = (dest, now + self.ttl_s)
        return dest.stat().st_size

    def path(self, key: str, now: float) -> Path | None:
        with self._lock:
            found = self._objects.get(key)
        if found is None or now >= found[1]:
            return None
        return found[0]
