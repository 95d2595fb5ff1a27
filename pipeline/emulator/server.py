"""Run the emulator in this process, on a free port, in a background thread.

For tests and the benchmark: ``with running_emulator(config) as base: ...`` yields
``http://127.0.0.1:PORT`` once uvicorn is accepting connections and stops it on exit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from pipeline.asr.base import ClipEngine
from pipeline.emulator.app import create_app
from pipeline.emulator.backend import TranscriptCache
from pipeline.emulator.config import EmulatorConfig

START_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_emulator(
    config: EmulatorConfig,
    *,
    engine: ClipEngine | None = None,
    clock: Callable[[], float] = time.time,
    cache: TranscriptCache | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """The emulator served by uvicorn in a daemon thread; yields its base URL."""
    app = create_app(config, engine, clock=clock, cache=cache)
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
