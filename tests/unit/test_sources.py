"""Unit tests for pipeline.inputs.sources and pipeline.asr.catalog: sources to local files, limits.

HTTP is scripted with httpx.MockTransport; nothing leaves the process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.asr.catalog import Family, Mode, model_info
from pipeline.errors import (
    ConfigError,
    FailureCode,
    MediaRejected,
    PermanentError,
    SourceMissing,
    SourceUnavailable,
)
from pipeline.inputs.sources import download_http, fetch, local_path, source_stamp
from pipeline.settings import LimitsSettings

URL = "http://media.example/talks/one.mp3"


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_local_paths_and_file_urls() -> None:
    """Plain paths stay as they are; file:// URLs are unquoted to bytes; remote ones are None."""
    assert local_path("/data/a b.wav") == Path("/data/a b.wav")
    assert local_path("file:///data/a%20b.wav") == Path("/data/a b.wav")
    assert os.fsencode(local_path("file:///data/caf%E9.wav")) == b"/data/caf\xe9.wav"  # type: ignore[arg-type]
    assert local_path(URL) is None and local_path("s3://bucket/k.wav") is None


def test_source_stamp_changes_with_the_file(tmp_path: Path) -> None:
    """A local file's stamp is size:mtime_ns and changes when it is rewritten; remote has none."""
    f = tmp_path / "a.wav"
    f.write_bytes(b"12345")
    os.utime(f, ns=(1, 1_000_000_000))
    assert source_stamp(str(f)) == "5:1000000000"
    f.write_bytes(b"123456")
    assert source_stamp(str(f)) != "5:1000000000"
    assert source_stamp(str(tmp_path / "missing.wav")) is None
    assert source_stamp(URL) is None


def test_local_source_is_used_in_place(tmp_path: Path) -> None:
    """fetch() of a local path neither copies nor marks it temporary."""
    got = fetch(str(tmp_path / "x.wav"), tmp_path, max_bytes=10, http=lambda: pytest.fail("http"))
    assert (got.path, got.temporary) == (tmp_path / "x.wav", False)


def test_http_download_lands_in_scratch_with_the_url_suffix(tmp_path: Path) -> None:
    """An http source is streamed into scratch as download.<ext> and marked temporary."""
    body = b"ID3" + b"\x00" * 5000
    got = fetch(
        URL,
        tmp_path,
        max_bytes=10_000,
        http=lambda: client(lambda r: httpx.Response(200, content=body)),
    )
    assert got.temporary and got.path == tmp_path / "download.mp3"
    assert got.path.read_bytes() == body


@pytest.mark.parametrize("status", [404, 410])
def test_gone_is_not_found(status: int, tmp_path: Path) -> None:
    """HTTP 404/410 is not_found, naming the URL and status, and leaves no file behind."""
    with pytest.raises(SourceMissing) as info:
        download_http(
            client(lambda r: httpx.Response(status)),
            URL,
            tmp_path / "d",
            max_bytes=100,
            deadline_s=10,
        )
    assert info.value.code is FailureCode.NOT_FOUND
    assert URL in info.value.message and str(status) in info.value.message
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("status", "kind"), [(503, SourceUnavailable), (429, SourceUnavailable), (403, PermanentError)]
)
def test_server_errors_retry_and_client_errors_do_not(
    status: int, kind: type, tmp_path: Path
) -> None:
    """5xx and 429 are transient download_failed; other 4xx are permanent download_failed."""
    with pytest.raises(kind) as info:
        download_http(
            client(lambda r: httpx.Response(status)),
            URL,
            tmp_path / "d",
            max_bytes=100,
            deadline_s=10,
        )
    assert info.value.code is FailureCode.DOWNLOAD_FAILED
    assert info.value.retryable is (status != 403)


def test_declared_size_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    """A Content-Length over max_bytes is too_large without downloading the body."""

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "5000000"}, content=b"x" * 5_000_000)

    with pytest.raises(MediaRejected) as info:
        download_http(client(handler), URL, tmp_path / "d", max_bytes=1_000_000, deadline_s=10)
    assert info.value.code is FailureCode.TOO_LARGE and URL in info.value.message
    assert not (tmp_path / "d").exists()


def test_streamed_size_over_the_limit_stops_and_cleans_up(tmp_path: Path) -> None:
    """A body with no length that keeps coming is cut at max_bytes: too_large, no partial file."""
    served = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            served.append(1)
            yield b"y" * 65_536

    with pytest.raises(MediaRejected) as info:
        download_http(
            client(lambda r: httpx.Response(200, content=chunks())),
            URL,
            tmp_path / "d",
            max_bytes=200_000,
            deadline_s=10,
        )
    assert info.value.code is FailureCode.TOO_LARGE and "sent more than" in info.value.message
    assert len(served) < 10, "the download should stop soon after the limit"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout, FailureCode.DOWNLOAD_TIMEOUT),
        (httpx.ConnectTimeout, FailureCode.DOWNLOAD_TIMEOUT),
        (httpx.ConnectError, FailureCode.DOWNLOAD_FAILED),
    ],
)
def test_transport_failures_are_transient(
    exc: type[Exception], code: FailureCode, tmp_path: Path
) -> None:
    """Timeouts are download_timeout and refused connections download_failed, both retryable."""

    def handler(r: httpx.Request) -> httpx.Response:
        raise exc("boom", request=r)

    with pytest.raises(SourceUnavailable) as info:
        download_http(client(handler), URL, tmp_path / "d", max_bytes=100, deadline_s=10)
    assert info.value.code is code and info.value.retryable and URL in info.value.message


def test_object_store_source_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    """An s3:// source with no object reader configured is config_invalid, saying what to set."""
    with pytest.raises(ConfigError, match="BULKSCRIBE_S3_ENDPOINT_URL") as info:
        fetch("s3://bucket/a.wav", tmp_path, max_bytes=10, http=lambda: pytest.fail("http"))
    assert info.value.code is FailureCode.CONFIG_INVALID


def test_catalog_local_limits_and_overrides() -> None:
    """Local is a clip model with file limits; LimitsSettings overrides only what it sets."""
    info = model_info("local", "tiny.en")
    assert (info.family, info.mode, info.max_clip_s) == (Family.LOCAL, Mode.CLIP, None)
    assert info.limits.max_duration_s == 12 * 3600
    small = model_info("local", "tiny.en", LimitsSettings(max_bytes=1_000))
    assert (small.limits.max_bytes, small.limits.max_duration_s) == (1_000, 12 * 3600)


@pytest.mark.parametrize(
    ("model", "family", "mode"),
    [
        ("fun-asr", Family.FUN_ASR, Mode.ASYNC),
        ("paraformer-v2", Family.FUN_ASR, Mode.ASYNC),
        ("qwen3-asr-flash-filetrans", Family.FILETRANS, Mode.ASYNC),
        ("qwen3-asr-flash", Family.QWEN_ASR, Mode.CLIP),
        ("qwen3-omni-flash", Family.OMNI, Mode.CLIP),
    ],
)
def test_catalog_dashscope_models(model: str, family: Family, mode: Mode) -> None:
    """Each DashScope model family maps to how it is driven; only sync ones cap clip length."""
    info = model_info("dashscope", model)
    assert (info.family, info.mode) == (family, mode)
    if mode is Mode.CLIP:  # the provider's per-request limit: 5 min / 10 MB at most
        assert info.max_clip_s is not None and 0 < info.max_clip_s <= 300.0
        assert info.max_clip_bytes == 10 * 1024**2
    else:
        assert info.max_clip_s is None


@pytest.mark.parametrize(("engine", "model"), [("whisperx", "x"), ("dashscope", "gpt-4o")])
def test_catalog_unknown_engine_or_model(engine: str, model: str) -> None:
    """An unknown engine or DashScope model is config_invalid, naming it."""
    with pytest.raises(ConfigError, match=model if engine == "dashscope" else engine) as info:
        model_info(engine, model)
    assert info.value.code is FailureCode.CONFIG_INVALID


def _redirecting(routes: dict[str, str], seen: list[str]) -> httpx.Client:
    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(str(r.url))
        target = routes.get(r.url.path)
        if target is None:
            return httpx.Response(200, content=b"RIFF")
        return httpx.Response(302, headers={"location": target})

    return client(handler)


@pytest.mark.parametrize(
    ("routes", "why", "requests"),
    [
        ({"/talks/one.mp3": "/talks/one.mp3"}, "redirect loop", 1),
        ({"/talks/one.mp3": "/b", "/b": "http://media.example/talks/one.mp3"}, "redirect loop", 2),
        ({"/talks/one.mp3": "file:///etc/passwd"}, "only http and https", 1),
        ({"/talks/one.mp3": "ftp://media.example/x"}, "only http and https", 1),
        ({"/talks/one.mp3": "http://169.254.169.254/latest/"}, "cloud metadata", 1),
        (
            {"/talks/one.mp3": "/h0", **{f"/h{i}": f"/h{i + 1}" for i in range(20)}},
            "more than 10 redirects",
            11,
        ),
    ],
)
def test_redirects_are_checked_hop_by_hop(
    routes: dict[str, str], why: str, requests: int, tmp_path: Path
) -> None:
    """Loops, other schemes, forbidden addresses and long chains are permanent
    download_failed, refused before the offending request is sent."""
    from pipeline.errors import SourceRefused

    seen: list[str] = []
    with pytest.raises(SourceRefused, match=why) as info:
        download_http(_redirecting(routes, seen), URL, tmp_path / "d", max_bytes=100, deadline_s=10)
    assert info.value.code is FailureCode.DOWNLOAD_FAILED and not info.value.retryable
    assert info.value.message.startswith(URL)
    assert len(seen) == requests and not any("169.254" in u for u in seen)
    assert not (tmp_path / "d").exists()


def test_a_relative_redirect_is_followed(tmp_path: Path) -> None:
    """An ordinary redirect still lands: the body of the final URL is written."""
    seen: list[str] = []
    got = download_http(
        _redirecting({"/talks/one.mp3": "../cdn/one.mp3"}, seen),
        URL,
        tmp_path / "d",
        max_bytes=100,
        deadline_s=10,
    )
    assert got == 4 and seen == [URL, "http://media.example/cdn/one.mp3"]


def test_messages_mask_credentials(tmp_path: Path) -> None:
    """A failing URL with user info and a token is named with both masked."""
    secret = "http://me:hunter2@media.example/a.wav?token=t0k3n&lang=en"
    with pytest.raises(PermanentError) as info:
        download_http(
            client(lambda r: httpx.Response(403)),
            secret,
            tmp_path / "d",
            max_bytes=100,
            deadline_s=10,
        )
    shown = "http://***@media.example/a.wav?token=***&lang=en"
    assert info.value.message == f"{shown} answered HTTP 403"
