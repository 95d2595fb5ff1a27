"""Temporary upload (§6): getPolicy, then an unauthenticated multipart PostObject."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

import httpx
import pytest
from ds_fakes import KEY, REQUEST_ID, Script, ok

from pipeline.errors import FailureCode, ProviderRejected, ProviderUnavailable

POLICY = {
    "policy": "eyJlepolicy",
    "signature": "eWysig=",
    "upload_dir": "dashscope-instant/abc/2024-07-18/xyz",
    "upload_host": "https://dashscope-file.oss.test",
    "expire_in_seconds": 300,
    "max_file_size_mb": 100,
    "capacity_limit_mb": 999999999,
    "oss_access_key_id": "LTAIkey",
    "x_oss_object_acl": "private",
    "x_oss_forbid_overwrite": "true",
}
FORM_ORDER = [
    "OSSAccessKeyId",
    "Signature",
    "policy",
    "key",
    "x-oss-object-acl",
    "x-oss-forbid-overwrite",
    "success_action_status",
    "x-oss-content-type",
    "file",
]


def _form(request: httpx.Request) -> dict[str, str]:
    """Field name → value of a multipart body, in order (values decoded leniently)."""
    part = rb'name="([^"]+)"(?:; filename="[^"]*")?\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--'
    parts = re.findall(part, request.content, re.S)
    return {k.decode(): v.decode("latin-1") for k, v in parts}


def test_upload_gets_a_policy_then_posts_the_form(script: Script, client) -> None:
    """The policy GET is authenticated; the PostObject is not and sends fields in SDK order."""
    script.add(ok({"request_id": REQUEST_ID, "data": POLICY}), httpx.Response(200))
    url = client.upload_temporary(b"RIFF-fake-wav", "clips/a.wav", "qwen3-asr-flash")

    policy_req, post = script.requests
    assert (policy_req.method, policy_req.url.path) == ("GET", "/api/v1/uploads")
    assert dict(policy_req.url.params) == {"action": "getPolicy", "model": "qwen3-asr-flash"}
    assert policy_req.headers["Authorization"] == f"Bearer {KEY}"

    assert (post.method, str(post.url)) == ("POST", "https://dashscope-file.oss.test")
    assert "Authorization" not in post.headers
    assert post.headers["Content-Type"].startswith("multipart/form-data")
    form = _form(post)
    assert list(form) == FORM_ORDER
    key = "dashscope-instant/abc/2024-07-18/xyz/a.wav"
    assert form == {
        "OSSAccessKeyId": "LTAIkey",
        "Signature": "eWysig=",
        "policy": "eyJlepolicy",
        "key": key,
        "x-oss-object-acl": "private",
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
        "x-oss-content-type": mimetypes.guess_type("a.wav")[0],
        "file": "RIFF-fake-wav",
    }
    assert url == f"oss://{key}"


def test_upload_from_a_path(script: Script, client, tmp_path: Path) -> None:
    """A path is streamed from disk under the given file name."""
    src = tmp_path / "local name.flac"
    src.write_bytes(b"fLaC-data")
    script.add(ok({"request_id": REQUEST_ID, "data": POLICY}), httpx.Response(200))
    url = client.upload_temporary(src, "item-7.flac", "fun-asr")
    assert _form(script.last)["file"] == "fLaC-data"
    assert url.endswith("/xyz/item-7.flac")


def test_upload_policy_missing_a_key_is_a_bad_response(script: Script, client) -> None:
    """A policy without all ten keys is provider_bad_response, and nothing is posted."""
    partial = {k: v for k, v in POLICY.items() if k != "upload_host"}
    script.add(ok({"request_id": REQUEST_ID, "data": partial}))
    with pytest.raises(ProviderUnavailable) as err:
        client.upload_temporary(b"x", "a.wav", "qwen3-asr-flash")
    assert err.value.code is FailureCode.PROVIDER_BAD_RESPONSE
    assert "upload_host" in err.value.message
    assert len(script.requests) == 1


def test_upload_over_the_policy_size_is_refused_locally(script: Script, client) -> None:
    """A file larger than max_file_size_mb is too_large before any upload."""
    small = {**POLICY, "max_file_size_mb": 0.000001}
    script.add(ok({"request_id": REQUEST_ID, "data": small}))
    with pytest.raises(ProviderRejected) as err:
        client.upload_temporary(b"0123456789", "a.wav", "qwen3-asr-flash")
    assert err.value.code is FailureCode.TOO_LARGE
    assert len(script.requests) == 1


def test_upload_post_failure_is_mapped(script: Script, client) -> None:
    """A 5xx from OSS on the PostObject is transient."""
    script.add(ok({"request_id": REQUEST_ID, "data": POLICY}), httpx.Response(503, text="busy"))
    with pytest.raises(ProviderUnavailable) as err:
        client.upload_temporary(b"x", "a.wav", "qwen3-asr-flash")
    assert err.value.code is FailureCode.PROVIDER_ERROR
