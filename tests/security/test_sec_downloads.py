"""Hostile ``http(s)://`` sources: a trickling server, redirect tricks, forbidden addresses.

Each attack runs the real ``bulkscribe run`` (or the emulator over real HTTP) against a
loopback server that counts what it was asked; nothing is sent to any other address.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.errors import FailureCode, SourceRefused
from pipeline.inputs.netguard import AddressPolicy, AddressRefused, GuardedBackend
from pipeline.inputs.sources import download_http

BULKSCRIBE = Path(sys.executable).with_name("bulkscribe")
DEADLINE_S = 2.0
ATTEMPTS = 4  # retry.max_attempts, the default
BACKOFF_BASE_S = 0.1  # only to keep the test short: 0.1 + 0.2 + 0.4 s of backoff at most


@dataclass
class Server:
    """A loopback HTTP server with scripted routes; ``hits`` counts requests per path and
    ``arrivals`` records when each came."""

    url: str = ""
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    spans: list[float] = field(default_factory=list)  # how long each trickle kept a client


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            srv.hits[path] += 1
            srv.arrivals.setdefault(path, []).append(time.monotonic())
            route = srv.routes.get(path)
            try:
                if route is None:
                    self.send_error(404)
                else:
                    route(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    srv.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()


def trickler(srv: Server) -> Callable[[BaseHTTPRequestHandler], None]:
    """Promise a megabyte, then send one byte a second for a minute; record how long the
    client stayed (its hang-up is seen at once: the socket turns readable at EOF)."""

    def trickle(h: BaseHTTPRequestHandler) -> None:
        t0 = time.monotonic()
        h.send_response(200)
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        try:
            for _ in range(60):
                h.wfile.write(b"\0")
                h.wfile.flush()
                readable, _, _ = select.select([h.connection], [], [], 1.0)
                if readable and not h.connection.recv(1, socket.MSG_PEEK):
                    break  # the client hung up
        finally:
            srv.spans.append(time.monotonic() - t0)

    return trickle


def redirect(to: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return send


def serve_file(path: Path) -> Callable[[BaseHTTPRequestHandler], None]:
    data = path.read_bytes()

    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return send


def run(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BULKSCRIBE), "run", str(manifest), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "BULKSCRIBE_RETRY__BACKOFF_BASE_S": str(BACKOFF_BASE_S), **(env or {})},
    )
    elapsed = time.monotonic() - t0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return proc, {r["id"]: r for r in results}, elapsed


@pytest.mark.ffmpeg
@pytest.mark.model
def test_trickling_server_ends_in_download_timeout(
    tmp_path: Path, server: Server, harvard_wav: Path
) -> None:
    """One byte a second cannot hold a worker: each try ends at the deadline, the item is
    download_timeout after the retry policy's tries, and the rest of the batch finishes."""
    server.routes["/trickle.wav"] = trickler(server)
    server.routes["/good.wav"] = serve_file(harvard_wav)
    proc, results, elapsed = run(
        tmp_path,
        [
            {"id": "trickle", "source": f"{server.url}/trickle.wav"},
            {"id": "good", "source": f"{server.url}/good.wav"},
            {"id": "local", "source": str(harvard_wav)},
        ],
        env={"BULKSCRIBE_DOWNLOAD__DEADLINE_S": str(DEADLINE_S)},
    )
    assert proc.returncode == 1, proc.stderr
    assert results["trickle"]["status"] == "FAILED"
    assert results["trickle"]["error"]["code"] == "download_timeout"
    assert "deadline" in results["trickle"]["error"]["message"]
    assert results["good"]["status"] == results["local"]["status"] == "SUCCEEDED"
    assert server.hits["/trickle.wav"] == ATTEMPTS
    # Each try holds the connection for the deadline and hangs up at once after it.
    print(f"tries held the client {[round(x, 2) for x in server.spans]} s; run {elapsed:.1f} s")
    assert len(server.spans) == ATTEMPTS
    assert all(DEADLINE_S - 0.1 <= span <= DEADLINE_S + 1.0 for span in server.spans), server.spans
    # The whole run: every try, its backoff, waiting for a free worker, and starting up
    # (the model loads meanwhile).
    bound = ATTEMPTS * (DEADLINE_S + 2) + BACKOFF_BASE_S * (2**ATTEMPTS) + 20
    assert elapsed < bound, f"{elapsed:.1f} s"


def test_deadline_wakes_a_blocked_read_in_process(tmp_path: Path, server: Server) -> None:
    """download_http on the guarded client returns at the deadline, not when the read
    timeout (60 s here) or the trickle would end."""
    from pipeline.inputs.netguard import guarded_client

    server.routes["/trickle.wav"] = trickler(server)
    client = guarded_client(AddressPolicy(), connect_timeout_s=5, read_timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        download_http(
            client, f"{server.url}/trickle.wav", tmp_path / "d", max_bytes=10**7, deadline_s=1.0
        )
    took = time.monotonic() - t0
    assert getattr(info.value, "code", None) is FailureCode.DOWNLOAD_TIMEOUT
    assert 1.0 <= took < 2.0, took
    assert not (tmp_path / "d").exists()


def test_emulator_downloads_under_the_same_deadline(server: Server) -> None:
    """The emulator fetches a client's file URL with the same downloader: a trickling URL
    fails the task (InvalidFile.DownloadFailed) soon after the deadline."""
    from pipeline.emulator import EmulatorConfig, running_emulator

    class NoEngine:
        name = "none"
        max_clip_s = 300.0

        def transcribe(self, *_a: Any) -> Any:
            raise AssertionError("never reached: the download fails first")

    server.routes["/trickle.wav"] = trickler(server)
    config = EmulatorConfig(latency_s=0.05, download_deadline_s=1.0)
    with running_emulator(config, engine=NoEngine()) as base, httpx.Client() as http:  # type: ignore[arg-type]
        t0 = time.monotonic()
        task = http.post(
            f"{base}/api/v1/services/audio/asr/transcription",
            headers={"X-DashScope-Async": "enable"},
            json={"model": "fun-asr", "input": {"file_urls": [f"{server.url}/trickle.wav"]}},
        ).json()
        task_id = task["output"]["task_id"]
        while True:
            out = http.get(f"{base}/api/v1/tasks/{task_id}").json()["output"]
            if out["task_status"] in ("SUCCEEDED", "FAILED"):
                break
            assert time.monotonic() - t0 < 10, out
            time.sleep(0.1)
        took = time.monotonic() - t0
    assert out["task_status"] == "FAILED"
    assert out["results"][0]["code"] == "InvalidFile.DownloadFailed"
    assert took < 1.0 + 2.0, took
    assert server.hits["/trickle.wav"] == 1


@pytest.mark.ffmpeg
@pytest.mark.model
def test_redirect_tricks_fail_at_once_and_loopback_still_works(
    tmp_path: Path, server: Server, harvard_wav: Path
) -> None:
    """A redirect loop, a redirect to file://, too many redirects and a metadata address are
    permanent download_failed after one try, naming why; loopback is fetched by default."""
    server.routes["/loop"] = redirect("/loop")
    server.routes["/ping"] = redirect("/pong")
    server.routes["/pong"] = redirect(f"{server.url}/ping")
    server.routes["/to-file"] = redirect("file:///etc/passwd")
    for i in range(30):
        server.routes[f"/hop{i}"] = redirect(f"/hop{i + 1}")
    server.routes["/moved.wav"] = redirect("/good.wav")
    server.routes["/good.wav"] = serve_file(harvard_wav)
    t0 = time.monotonic()
    proc, results, _ = run(
        tmp_path,
        [
            {"id": "loop", "source": f"{server.url}/loop"},
            {"id": "pingpong", "source": f"{server.url}/ping"},
            {"id": "to_file", "source": f"{server.url}/to-file"},
            {"id": "hops", "source": f"{server.url}/hop0"},
            {"id": "metadata", "source": "http://169.254.169.254/latest/meta-data/iam/"},
            {"id": "moved", "source": f"{server.url}/moved.wav"},
        ],
    )
    assert proc.returncode == 1, proc.stderr
    for item, why in (
        ("loop", "redirect loop"),
        ("pingpong", "redirect loop"),
        ("to_file", "only http and https"),
        ("hops", "more than 10 redirects"),
        ("metadata", "cloud metadata address"),
    ):
        r = results[item]
        assert (r["status"], r["error"]["code"]) == ("FAILED", "download_failed"), r
        assert why in r["error"]["message"], r
    assert results["metadata"]["error"]["message"].startswith("http://169.254.169.254/")
    # One try each: counted at the server.
    assert server.hits["/loop"] == 1
    assert (server.hits["/ping"], server.hits["/pong"]) == (1, 1)
    assert server.hits["/to-file"] == 1
    assert [server.hits[f"/hop{i}"] for i in range(12)] == [1] * 11 + [0]
    assert results["moved"]["status"] == "SUCCEEDED"
    assert server.hits["/good.wav"] == 1
    # No retries happened: nothing waited on a backoff (the run is model load + one file).
    assert time.monotonic() - t0 < 60


@pytest.mark.ffmpeg
def test_allow_private_false_refuses_loopback_before_any_request(
    tmp_path: Path, server: Server, harvard_wav: Path
) -> None:
    """With download.allow_private=false a loopback URL, by address or by name, is
    download_failed at once and the server never sees a request."""
    server.routes["/good.wav"] = serve_file(harvard_wav)
    port = server.url.rsplit(":", 1)[1]
    proc, results, elapsed = run(
        tmp_path,
        [
            {"id": "by_ip", "source": f"{server.url}/good.wav"},
            {"id": "by_name", "source": f"http://localhost:{port}/good.wav"},
        ],
        env={"BULKSCRIBE_DOWNLOAD__ALLOW_PRIVATE": "false"},
    )
    assert proc.returncode == 1, proc.stderr
    for item in ("by_ip", "by_name"):
        r = results[item]
        assert (r["status"], r["error"]["code"]) == ("FAILED", "download_failed"), r
        assert "download.allow_private is false" in r["error"]["message"]
        assert "good.wav" in r["error"]["message"]
    assert sum(server.hits.values()) == 0
    assert elapsed < 30


@pytest.mark.parametrize(
    ("address", "private_ok", "refused"),
    [
        ("169.254.169.254", True, "cloud metadata"),
        ("::ffff:169.254.169.254", True, "cloud metadata"),
        ("fd00:ec2::254", True, "cloud metadata"),
        ("100.100.100.200", True, "cloud metadata"),
        ("169.254.10.1", True, "link-local"),
        ("fe80::1%eth0", True, "link-local"),
        ("127.0.0.1", True, None),
        ("10.1.2.3", True, None),
        ("8.8.8.8", False, None),
        ("127.0.0.1", False, "allow_private is false"),
        ("::1", False, "allow_private is false"),
        ("192.168.1.1", False, "allow_private is false"),
        ("fc00::1", False, "allow_private is false"),
        ("100.64.0.1", False, "allow_private is false"),
        ("0.0.0.0", False, "allow_private is false"),
    ],
)
def test_address_policy(address: str, private_ok: bool, refused: str | None) -> None:
    """Metadata and link-local addresses are always refused; non-global ones only when
    private addresses are not allowed."""
    reason = AddressPolicy(allow_private=private_ok).refusal(address)
    assert (reason is None) if refused is None else (refused in (reason or "")), reason


def test_metadata_address_is_refused_before_any_connection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The policy refuses 169.254.169.254 before a socket exists: neither the literal check
    in the downloader nor the guarded backend ever calls connect."""
    from pipeline.inputs.netguard import guarded_client

    def no_connect(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(AddressRefused):
        GuardedBackend(AddressPolicy()).connect_tcp("169.254.169.254", 80)
    client = guarded_client(AddressPolicy(), connect_timeout_s=1, read_timeout_s=1)
    with pytest.raises(SourceRefused) as info:
        download_http(
            client,
            "http://169.254.169.254/latest/meta-data/",
            tmp_path / "d",
            max_bytes=100,
            deadline_s=5,
        )
    assert info.value.code is FailureCode.DOWNLOAD_FAILED and not info.value.retryable
    assert "cloud metadata" in info.value.message


def test_a_name_is_resolved_once_and_the_checked_address_is_used(
    monkeypatch: pytest.MonkeyPatch, server: Server, tmp_path: Path
) -> None:
    """DNS rebinding: the backend resolves a name once, checks every answer and connects to
    the address it checked; a name answering a metadata address is refused."""
    from pipeline.inputs.netguard import guarded_client

    server.routes["/a.wav"] = lambda h: (
        h.send_response(200),
        h.send_header("Content-Length", "3"),
        h.end_headers(),
        h.wfile.write(b"abc"),
    )  # type: ignore[func-returns-value]
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "169.254.169.254"])  # a second lookup would get metadata
    lookups: list[str] = []

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "media.test":
            lookups.append(host)
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = server.url.rsplit(":", 1)[1]
    client = guarded_client(AddressPolicy(), connect_timeout_s=2, read_timeout_s=2)
    assert (
        download_http(
            client, f"http://media.test:{port}/a.wav", tmp_path / "d", max_bytes=100, deadline_s=5
        )
        == 3
    )
    assert lookups == ["media.test"]
    with pytest.raises(SourceRefused, match="cloud metadata"):
        download_http(
            client, f"http://media.test:{port}/a.wav", tmp_path / "e", max_bytes=100, deadline_s=5
        )
    assert server.hits["/a.wav"] == 1
