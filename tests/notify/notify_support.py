"""Helpers for the notification tests: the webhook receiver, scripted answers, the CLI.

Imported as ``from notify_support import ...``; the fixtures are in conftest.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"bulkscribe-notify-test-secret-32").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-secret-of-32-bytes!!!").decode()
BULKSCRIBE = Path(sys.executable).with_name("bulkscribe")


@dataclass
class Delivery:
    """One request the receiver got, and what it made of it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed payload, or the verification error
    answered: int | None  # the status sent back (None: never answered)

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def ok(self) -> bool:
        return not isinstance(self.verified, Exception)


Answer = Callable[[BaseHTTPRequestHandler], int | None]


@dataclass
class Receiver:
    """``script[path]``: answers handed out in order (the last one repeats)."""

    url: str
    secret: str = SECRET
    script: dict[str, list[Answer]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, *answers: Answer) -> str:
        self.script[path] = list(answers)
        return self.url + path

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def answered(self, path: str, timeout_s: float = 5) -> list[int | None]:
        """The statuses sent back at ``path``, once every answer has been written."""
        end = time.monotonic() + timeout_s
        while any(d.answered is None for d in self.at(path)) and time.monotonic() < end:
            time.sleep(0.01)
        return [d.answered for d in self.at(path)]

    def wait(self, path: str, n: int, timeout_s: float = 30) -> list[Delivery]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            got = self.at(path)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.at(path))} deliveries, wanted {n}")


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    def send(h: BaseHTTPRequestHandler) -> int:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        return code

    return send


def hang(seconds: float) -> Answer:
    """Never answer (the connection is closed after ``seconds``)."""

    def wait(_h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        return None

    return wait


def endless(sent: list[int], total: int = 200 * 1024**2) -> Answer:
    """200 and a body of ``total`` bytes; ``sent`` gets how many were accepted."""

    def stream(h: BaseHTTPRequestHandler) -> int:
        h.send_response(200)
        h.send_header("Content-Length", str(total))
        h.end_headers()
        chunk = b"x" * 65536
        n = 0
        try:
            while n < total:
                h.wfile.write(chunk)
                n += len(chunk)
        finally:
            sent.append(n)
        return 200

    return stream


def serve(rx: Receiver) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start ``rx`` on 127.0.0.1 (a free port); it verifies each webhook it is sent."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verified: Any = Webhook(rx.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                verified = exc
            delivery = Delivery(self.path, headers, body, verified, None)
            with rx.lock:
                rx.deliveries.append(delivery)
                answers = rx.script.get(self.path) or [status(200)]
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
            try:
                delivery.answered = answer(self)
            except (BrokenPipeError, ConnectionResetError):
                delivery.answered = -1  # the client hung up: that is the point

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rx.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real console script, with ``env`` over the test's environment."""
    return subprocess.run(
        [str(BULKSCRIBE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def payload(d: Delivery) -> dict[str, Any]:
    return json.loads(d.body)  # type: ignore[no-any-return]
