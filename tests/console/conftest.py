"""Console fixtures: a finished embedded run made with the real CLI, a console serving a copy
of it in a subprocess, and Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import say

HOSTILE = "<img src=x onerror=alert(1)>.wav"
TOKEN = "op-token-for-tests"
READONLY = "viewer-token-for-tests"
ARTIFACTS = Path(__file__).parent / "artifacts"
EXE = Path(sys.executable).with_name("bulkscribe")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bulkscribe run` over two spoken files (one nested) and a hostile-named non-media file:
    2 SUCCEEDED, 1 FAILED not_media."""
    root = tmp_path_factory.mktemp("console-run")
    src = root / "in"
    (src / "day2").mkdir(parents=True)
    say("Hello there. This is a test of the console.", src / "hello.wav")
    say("The meeting starts at nine. Bring your notes.", src / "day2" / "meeting.wav")
    (src / HOSTILE).write_text("not audio at all\n")
    out = root / "out"
    done = subprocess.run(
        [str(EXE), "run", str(src), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 1, done.stderr  # one item failed
    return out


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULKSCRIBE_", "DASHSCOPE_"))}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    out: Path
    proc: subprocess.Popen[str]
    token: str | None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    @property
    def ledger_path(self) -> Path:
        return self.out / ".bulkscribe" / "ledger.db"


def start_console(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(EXE), "console", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**(env or {})),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"console exited: {proc.communicate()[1]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("console did not start")


def copy_run(src: Path, dest: Path) -> None:
    """A copy of an embedded run that is that directory's own run (its batch id and out)."""
    from pipeline.runner import batch_id_for

    shutil.copytree(src, dest)
    old, new = batch_id_for(src), batch_id_for(dest)
    with sqlite3.connect(dest / ".bulkscribe" / "ledger.db") as db:
        db.execute("UPDATE batches SET id = ?, out = ? WHERE id = ?", (new, str(dest), old))
        db.execute("UPDATE items SET batch_id = ? WHERE batch_id = ?", (new, old))


@pytest.fixture
def serve(finished_run: Path, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start a console over a private copy of the finished run (actions change it)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*, token: str | None = TOKEN, readonly: str | None = READONLY) -> Served:
        out = tmp_path / "out"
        if not out.exists():
            copy_run(finished_run, out)
        env = {}
        if token:
            env["BULKSCRIBE_CONSOLE_TOKEN"] = token
        if readonly:
            env["BULKSCRIBE_CONSOLE_READONLY_TOKEN"] = readonly
        proc, url = start_console("--out", str(out), env=env)
        procs.append(proc)
        return Served(url, out, proc, token)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    context.close()


def shot(page: object, name: str) -> Path:
    """Save a screenshot as a test artifact (tests/console/artifacts/, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def login(page: object, served: Served, token: str = TOKEN) -> None:
    page.goto(f"{served.url}/login")  # type: ignore[attr-defined]
    page.fill("input[name=token]", token)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{served.url}/")  # type: ignore[attr-defined]
