"""How many submissions and polls a second one ``bulkscribe emulator`` process sustains.

Starts the real CLI as a subprocess and drives it over HTTP with concurrent asyncio/httpx
clients from this process:

* ``submit``: E1 Fun-ASR submissions (latency 1 h, one slot: tasks pile up PENDING, so this
  measures the API, not the model);
* ``poll``: E2 queries of random tasks among those submitted;
* ``poll+asr``: the same polls while the model transcribes in the emulator's threads (a
  second emulator, four slots, eight distinct generated clips), showing the event loop stays
  responsive. On a small machine, many pollers mostly measure CPU (and GIL) contention
  between client, event loop and model threads; transcription slows down accordingly.

Usage: ``.venv/bin/python bench/emulator_bench.py [--duration 5] [--clients 1,16,64]
[--client httpx|aiohttp]``. Each simulated client has its own connection: one shared
``httpx.AsyncClient`` pool degrades badly past ~16 concurrent requests, which would measure
httpcore rather than the emulator. The client shares the machine (and its own GIL) with the
server, so figures are a floor; ``--client aiohttp`` spends less CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from pipeline.emulator.server import free_port

SUBMIT = "/api/v1/services/audio/asr/transcription"
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
]


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class Session(Protocol):
    """One simulated client's connection: status code and JSON body of each call."""

    async def get(self, url: str) -> tuple[int, Any]: ...
    async def post(self, url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]: ...
    async def close(self) -> None: ...


class HttpxSession:
    def __init__(self) -> None:
        self._c = httpx.AsyncClient(timeout=30.0)

    async def get(self, url: str) -> tuple[int, Any]:
        r = await self._c.get(url)
        return r.status_code, r.json()

    async def post(self, url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        r = await self._c.post(url, json=body, headers=headers)
        return r.status_code, r.json()

    async def close(self) -> None:
        await self._c.aclose()


class AiohttpSession:
    def __init__(self) -> None:
        import aiohttp

        self._s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))

    async def get(self, url: str) -> tuple[int, Any]:
        async with self._s.get(url) as r:
            return r.status, await r.json()

    async def post(self, url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        async with self._s.post(url, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def close(self) -> None:
        await self._s.close()


SESSIONS: dict[str, Callable[[], Session]] = {"httpx": HttpxSession, "aiohttp": AiohttpSession}
Call = Callable[[Session], Awaitable[int]]


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[str]:
    """``bulkscribe emulator`` on a free port; yields its base URL, terminates it after."""
    port = free_port()
    exe = Path(sys.executable).with_name("bulkscribe")
    proc = subprocess.Popen(
        [str(exe), "emulator", "--port", str(port), "--log-level", "error", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit("the emulator exited during start-up")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/_emulator/stats").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the emulator did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def drive(
    name: str, clients: int, seconds: float, call: Call, session: Callable[[], Session]
) -> Row:
    """Run ``clients`` loops of ``call`` for ``seconds``; latency percentiles over all calls."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal errors
        s = session()
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                status = await call(s)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            await s.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return Row(name, clients, len(latencies), elapsed, cuts[49] * 1e3, cuts[98] * 1e3, errors)


def submit_call(base: str, ids: list[str]) -> Call:
    body = {
        "model": "fun-asr",
        "input": {"file_urls": ["http://127.0.0.1:9/a.wav"]},
        "parameters": {},
    }

    async def call(s: Session) -> int:
        status, data = await s.post(base + SUBMIT, body, {"X-DashScope-Async": "enable"})
        if status == 200:
            ids.append(data["output"]["task_id"])
        return status

    return call


def poll_call(base: str, ids: list[str]) -> Call:
    async def call(s: Session) -> int:
        status, _ = await s.get(f"{base}/api/v1/tasks/{random.choice(ids)}")
        return status

    return call


@contextlib.contextmanager
def clips(count: int) -> Iterator[list[str]]:
    """``count`` distinct espeak-ng clips (about 8 s each) served over HTTP."""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            text = " ".join(SENTENCES[i % len(SENTENCES) :] + SENTENCES[: i % len(SENTENCES)][:1])
            subprocess.run(
                ["espeak-ng", "-s", str(150 + i), "-w", f"{tmp}/c{i}.wav", text],
                check=True,
                capture_output=True,
            )
        handler = functools.partial(_Quiet, directory=tmp)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield [f"http://127.0.0.1:{server.server_address[1]}/c{i}.wav" for i in range(count)]
        server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


async def api_rows(
    base: str, clients: list[int], seconds: float, session: Callable[[], Session]
) -> list[Row]:
    ids: list[str] = []
    rows = [await drive("submit", c, seconds, submit_call(base, ids), session) for c in clients]
    rows += [await drive("poll", c, seconds, poll_call(base, ids), session) for c in clients]
    return rows


async def load_rows(
    base: str, urls: list[str], clients: int, seconds: float, session: Callable[[], Session]
) -> list[Row]:
    async with httpx.AsyncClient(timeout=60.0) as client:
        ids = [
            (
                await client.post(
                    base + SUBMIT,
                    headers={"X-DashScope-Async": "enable"},
                    json={"model": "fun-asr", "input": {"file_urls": [u]}, "parameters": {}},
                )
            ).json()["output"]["task_id"]
            for u in urls
        ]
    row = await drive("poll+asr", clients, seconds, poll_call(base, ids), session)
    stats = httpx.get(f"{base}/_emulator/stats", timeout=60.0).json()
    return [
        row,
        Row(f"  ({stats['transcriptions']} files transcribed meanwhile)", 0, 0, 1, 0, 0, 0),
    ]


def print_table(rows: list[Row]) -> None:
    print(
        f"{'scenario':<16}{'clients':>8}{'requests':>10}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}"
    )
    for r in rows:
        if r.requests == 0:
            print(r.scenario)
            continue
        print(
            f"{r.scenario:<16}{r.clients:>8}{r.requests:>10}{r.rate:>10.0f}{r.p50_ms:>9.1f}"
            f"{r.p99_ms:>9.1f}{r.errors:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients to try")
    parser.add_argument("--client", choices=sorted(SESSIONS), default="httpx")
    parser.add_argument(
        "--asr-clients",
        type=int,
        default=4,
        help="pollers during poll+asr (more mostly measures CPU contention)",
    )
    parser.add_argument("--no-asr", action="store_true", help="skip the poll+asr scenario")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    session = SESSIONS[args.client]
    print(
        f"client: {args.client}, one connection per simulated client, {args.duration:g} s per row"
    )
    with emulator("--latency-s", "3600", "--max-concurrency", "1") as base:
        rows = asyncio.run(api_rows(base, clients, args.duration, session))
        stats = httpx.get(f"{base}/_emulator/stats", timeout=60.0).json()
        pending = stats["statuses"].get("PENDING", 0)
    rows.append(Row(f"  ({pending} tasks PENDING in one process afterwards)", 0, 0, 1, 0, 0, 0))
    if not args.no_asr:
        with clips(8) as urls, emulator("--latency-s", "0", "--max-concurrency", "4") as base:
            rows += asyncio.run(load_rows(base, urls, args.asr_clients, args.duration, session))
    print_table(rows)


if __name__ == "__main__":
    main()
