"""Helpers for the end-to-end tests: manifests, results, logs, a scripted HTTP server.

Plain functions, imported by the test modules beside this file; fixtures live in conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

BULKSCRIBE = Path(sys.executable).with_name("bulkscribe")
LV = "sense_and_sensibility_01_austen_64kb-"  # LibriVox file name prefix
# Embedded runs use one worker. With two, one item's ffprobe/ffmpeg can be started while
# another is transcribed, and run_media's preexec_fn fork() then deadlocks against
# OpenBLAS (see test_media_deadlock.py). Make this "2" once pipeline/media.py is fixed.
WORKERS = "2"


def ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly; a generous timeout so a runaway source cannot run forever."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


# --- manifests, results, logs ----------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    """A JSONL manifest; str rows are written verbatim (for broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_results(out: Path) -> list[dict[str, Any]]:
    """results.jsonl, decoded strictly as UTF-8 JSON, one object per line."""
    text = (out / "results.jsonl").read_bytes().decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def by_id(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in results if r["id"] is not None}


def log_events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "bulkscribe.log").read_text().splitlines()]


def document_text(out: Path, item: str) -> str:
    doc = json.loads((out / f"{item}.json").read_text(encoding="utf-8"))
    return " ".join(t["text"] for t in doc["transcripts"])


def assert_times_sane(doc: dict[str, Any], start_ms: int = 0, end_ms: int | None = None) -> None:
    """Sentences and words in order, never overlapping, inside [start_ms, end_ms]."""
    end_ms = (
        end_ms if end_ms is not None else doc["properties"]["original_duration_in_milliseconds"]
    )
    for t in doc["transcripts"]:
        prev_s = prev_w = start_ms
        for s in t["sentences"]:
            assert isinstance(s["begin_time"], int) and isinstance(s["end_time"], int)
            assert prev_s <= s["begin_time"] <= s["end_time"] <= end_ms, (s, prev_s, end_ms)
            prev_s = s["end_time"]
            for w in s["words"]:
                assert s["begin_time"] <= w["begin_time"] <= w["end_time"] <= s["end_time"], w
                assert w["begin_time"] >= prev_w, ("words overlap", w, prev_w)
                prev_w = w["end_time"]


def ledger_rows(out: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the run's SQLite ledger directly (read-only)."""
    import sqlite3

    conn = sqlite3.connect(
        f"file:{out / '.bulkscribe' / 'ledger.db'}?mode=ro", uri=True, timeout=10
    )
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- a local HTTP server --------------------------------------------------------------------


@dataclass
class MediaServer:
    """A loopback HTTP server with scripted routes; ``hits`` counts requests per path."""

    url: str
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]
    hits: Counter[str] = field(default_factory=Counter)

    def serve_bytes(self, path: str, data: bytes) -> str:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = send
        return self.url + path

    def serve_slowly(self, path: str, delay_s: float) -> str:
        def stall(h: BaseHTTPRequestHandler) -> None:
            time.sleep(delay_s)  # longer than the client's read timeout
            h.send_response(200)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = stall
        return self.url + path

    def serve_endless(self, path: str, chunk: int = 64 * 1024, total: int = 64 * 1024**2) -> str:
        def stream(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)  # HTTP/1.0, no Content-Length: the body ends when we close
            h.end_headers()
            for _ in range(total // chunk):
                h.wfile.write(b"\xff\xfb" * (chunk // 2))

        self.routes[path] = stream
        return self.url + path


def make_handler(server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.hits[self.path] += 1
            route = server.routes.get(self.path)
            try:
                if route is None:
                    self.send_error(404, "no such file")
                else:
                    route(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout, size limit): that is the point

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def media_processes(marker: str) -> list[tuple[int, str]]:
    """Live (non-zombie) ffmpeg/ffprobe processes whose command line mentions ``marker``."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
            state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        name = os.path.basename(argv[0]).decode(errors="replace") if argv else ""
        if name in ("ffmpeg", "ffprobe") and state != "Z" and marker.encode() in b" ".join(argv):
            found.append((int(pid_dir.name), name))
    return found
