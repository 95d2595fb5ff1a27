"""The emulator as an exposed service: every route behind --api-key, every body capped.

``bulkscribe emulator`` runs as a real subprocess on a loopback port; the attacks are plain
HTTP (and raw sockets for bodies that never end) from this process.
"""

from __future__ import annotations

import functools
import http.server
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.emulator.server import free_port

KEY = "sk-sec-emulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG = {"Authorization": "Bearer sk-not-the-key"}
MB = 1024 * 1024


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``bulkscribe emulator --api-key KEY`` on a free port; yields (base URL, pid)."""
    port = free_port()
    exe = Path(sys.executable).with_name("bulkscribe")
    log = (tmp_path / "emulator.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "emulator", "--port", str(port), "--api-key", KEY, "--latency-s", "0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "emulator.log").read_text()
            try:
                if httpx.get(f"{base}/_emulator/stats", headers=AUTH).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the emulator did not come up"
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


ADMIN = [
    ("GET", "/_emulator/tasks", None),
    ("GET", "/_emulator/stats", None),
    ("GET", "/_emulator/config", None),
    ("POST", "/_emulator/config", {"latency_s": 0.1}),
    ("POST", "/_emulator/reset", None),
]


def test_admin_routes_need_the_key(emulator: tuple[str, int]) -> None:
    """Every admin route answers 401 without the key and with a wrong one, 200 with it; a
    refused config change or reset changes nothing."""
    base, _ = emulator
    with httpx.Client() as http:
        http.post(
            f"{base}/api/v1/services/audio/asr/transcription",
            headers={**AUTH, "X-DashScope-Async": "enable"},
            json={
                "model": "fun-asr",
                "input": {"file_urls": ["http://127.0.0.1:9/a.wav?token=secret"]},
            },
        ).raise_for_status()
        for method, path, body in ADMIN:
            for headers in (None, WRONG):
                r = http.request(method, base + path, headers=headers, json=body)
                assert (r.status_code, r.json()["code"]) == (401, "InvalidApiKey"), path
                assert "secret" not in r.text
        for method, path, body in ADMIN:
            assert http.request(method, base + path, headers=AUTH, json=body).status_code == 200
        assert http.get(f"{base}/_emulator/tasks", headers=AUTH).json() == []  # the reset ran
        unknown = http.get(f"{base}/no/such/route")
        assert unknown.status_code == 401


def _media_server(directory: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def media_server(harvard_wav: Path) -> Iterator[str]:
    yield from _media_server(harvard_wav.parent)


@pytest.mark.ffmpeg
@pytest.mark.model
def test_result_urls_are_presigned_for_the_sdk_and_our_client(
    emulator: tuple[str, int], media_server: str, harvard_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key set, the transcription_url the official SDK receives works as it is (no
    header), as does bulkscribe's own client; the same URL unsigned, tampered with, or for
    another result is 401; a Bearer key works on the bare path."""
    import dashscope
    from dashscope.audio.asr import Transcription

    from pipeline.asr.dashscope import DashScopeClient

    base, _ = emulator
    monkeypatch.setattr(dashscope, "base_http_api_url", f"{base}/api/v1")
    monkeypatch.setattr(dashscope, "api_key", KEY)
    done = Transcription.call(model="fun-asr", file_urls=[f"{media_server}/{harvard_wav.name}"])
    assert done.output.task_status == "SUCCEEDED", done
    url = done.output.results[0]["transcription_url"]
    parts = urlsplit(url)
    assert {"Expires", "OSSAccessKeyId", "Signature"} <= {
        p.split("=")[0] for p in parts.query.split("&")
    }
    doc = httpx.get(url).json()
    assert "chicken leg" in doc["transcripts"][0]["text"].lower()
    with httpx.Client() as http:
        ours = DashScopeClient(f"{base}/api/v1", KEY, http).fetch_result(url)
    assert ours["transcripts"][0]["text"] == doc["transcripts"][0]["text"]
    bare = f"{base}{parts.path}"
    assert httpx.get(bare).status_code == 401
    assert httpx.get(bare, headers=WRONG).status_code == 401
    assert httpx.get(bare, headers=AUTH).status_code == 200
    tampered = url.replace("Expires=", "Expires=9")
    assert httpx.get(tampered).status_code == 401
    other = url.replace("/0.json", "/1.json")
    assert httpx.get(other).status_code == 401


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _post_big(
    port: int, path: str, total: int, *, chunked: bool, headers: dict[str, str]
) -> tuple[int, int]:
    """POST ``total`` bytes (chunked, or with a true Content-Length) as fast as the server
    reads them; stop as soon as it answers. Returns (status, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        *(f"{k}: {v}" for k, v in headers.items()),
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}",
    ]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    piece = b"[" * MB
    frame = memoryview(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
    sent = offset = 0
    sock.setblocking(False)
    try:
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break  # it answered
            assert writable, "the server neither reads nor answers"
            try:
                offset += sock.send(frame[offset:])
            except (BrokenPipeError, ConnectionResetError):
                break
            if offset == len(frame):
                sent, offset = sent + len(piece), 0
        sock.setblocking(True)
        sock.settimeout(30)
        reply = b""
        while b"\r\n" not in reply:
            more = sock.recv(4096)
            if not more:
                break
            reply += more
    finally:
        sock.close()
    return int(reply.split(b" ", 2)[1]), sent


def test_oversized_bodies_are_refused_and_memory_stays_flat(emulator: tuple[str, int]) -> None:
    """Eight parallel 100 MB bodies to an admin route and to the API, chunked (no length to
    trust) or with a declared length, are all 413 after a few MB at most, and the emulator's
    peak memory grows by far less than what was sent; without the key they are 401."""
    base, pid = emulator
    port = int(base.rsplit(":", 1)[1])
    before = _rss_kb(pid, "VmRSS")
    submit = {**AUTH, "X-DashScope-Async": "enable"}
    attacks: list[tuple[str, bool, dict[str, str]]] = [
        (path, chunked, headers)
        for path, headers in (
            ("/_emulator/config", AUTH),
            ("/api/v1/services/audio/asr/transcription", submit),
        )
        for chunked in (True, False)
    ] * 2
    attacks += [("/_emulator/config", True, {}), ("/_emulator/reset", False, WRONG)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda a: _post_big(port, a[0], 100 * MB, chunked=a[1], headers=a[2]), attacks)
        )
    statuses = [status for status, _ in answers]
    assert statuses == [413] * 8 + [401, 401], statuses
    assert max(sent for _, sent in answers) < 20 * MB  # cut off early, not read to the end
    grown_mb = (_rss_kb(pid, "VmHWM") - before) / 1024
    print(f"sent {[round(s / MB, 1) for _, s in answers]} MB; peak RSS +{grown_mb:.0f} MB")
    assert grown_mb < 100, f"peak RSS grew {grown_mb:.0f} MB"
    # Still serving: a small, proper request after the attack.
    assert (
        httpx.post(f"{base}/_emulator/config", headers=AUTH, json={"latency_s": 0.2}).json()[
            "latency_s"
        ]
        == 0.2
    )


def test_body_caps_follow_the_route() -> None:
    """Admin routes and result files take 64 KiB; API routes a sync call's 10 MB data URI;
    the upload endpoint the upload limit; each plus framing."""
    from pipeline.emulator.access import SMALL_BODY, Route, body_cap, route_of
    from pipeline.emulator.config import EmulatorConfig

    config = EmulatorConfig()
    caps: dict[str, int] = {
        p: body_cap(route_of(p), config)
        for p in (
            "/_emulator/config",
            "/results/t/0.json",
            "/api/v1/services/audio/asr/transcription",
            "/compatible-mode/v1/chat/completions",
            "/_oss/upload",
        )
    }
    assert caps["/_emulator/config"] == caps["/results/t/0.json"] == SMALL_BODY
    assert config.sync_max_bytes < caps["/api/v1/services/audio/asr/transcription"] <= 12 * MB
    assert (
        caps["/compatible-mode/v1/chat/completions"]
        == caps["/api/v1/services/audio/asr/transcription"]
    )
    assert config.upload_max_bytes < caps["/_oss/upload"] <= config.upload_max_bytes + 2 * MB
    assert route_of("/_oss/upload") is Route.UPLOAD
