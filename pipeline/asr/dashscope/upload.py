"""Temporary upload to DashScope's OSS (§6), as pure pieces the client sends.

The getPolicy answer (E6) must carry all ten keys the SDK reads; the PostObject form (E7)
sends its fields in the SDK's order, the file last (OSS requires ``file`` to be the final
field). The result is ``oss://<upload_dir>/<basename>``, valid 48 h and usable only by the
same account and model, with ``X-DashScope-OssResourceResolve: enable`` on the request.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pipeline.asr.dashscope.wire import bad_response
from pipeline.errors import FailureCode, ProviderRejected


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int
    max_file_size_mb: float
    capacity_limit_mb: float
    oss_access_key_id: str
    x_oss_object_acl: str
    x_oss_forbid_overwrite: str


_FIELDS = tuple(f.name for f in fields(UploadPolicy))


def parse_policy(body: Mapping[str, Any]) -> UploadPolicy:
    """E6's answer: the policy sits under ``data`` (``output`` also accepted)."""
    data = body.get("data")
    if not isinstance(data, Mapping):
        data = body.get("output")
    if not isinstance(data, Mapping):
        raise bad_response("upload policy answer has no 'data'", request_id=body.get("request_id"))
    missing = [k for k in _FIELDS if data.get(k) is None]
    if missing:
        raise bad_response(
            f"upload policy lacks {', '.join(missing)}", request_id=body.get("request_id")
        )
    numbers = {"expire_in_seconds": int, "max_file_size_mb": float, "capacity_limit_mb": float}
    try:
        values = {k: numbers.get(k, str)(data[k]) for k in _FIELDS}
    except (TypeError, ValueError):
        raise bad_response(
            "upload policy has non-numeric limits", request_id=body.get("request_id")
        ) from None
    return UploadPolicy(**values)


def object_key(policy: UploadPolicy, filename: str) -> str:
    """``upload_dir/basename``; directory parts of ``filename`` are dropped."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "audio"
    return f"{policy.upload_dir.rstrip('/')}/{base}"


def form_fields(policy: UploadPolicy, key: str) -> dict[str, str]:
    """The PostObject form fields before ``file``, in the order the SDK sends them."""
    content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return {
        "OSSAccessKeyId": policy.oss_access_key_id,
        "Signature": policy.signature,
        "policy": policy.policy,
        "key": key,
        "x-oss-object-acl": policy.x_oss_object_acl,
        "x-oss-forbid-overwrite": policy.x_oss_forbid_overwrite,
        "success_action_status": "200",
        "x-oss-content-type": content_type,
    }


def check_size(policy: UploadPolicy, size_bytes: int, filename: str) -> None:
    """Refuse locally what OSS would refuse after the whole upload."""
    if size_bytes > policy.max_file_size_mb * 1024 * 1024:
        raise ProviderRejected(
            FailureCode.TOO_LARGE,
            f"{filename} is {size_bytes / 1024**2:.1f} MB; DashScope's temporary upload "
            f"takes at most {policy.max_file_size_mb:g} MB",
        )
