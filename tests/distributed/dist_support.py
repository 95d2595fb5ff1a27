"""Fixtures and helpers for the distributed-mode tests: real services, real processes.

The fixtures are exposed to the test modules by this directory's ``conftest.py``; the
helpers (``Cluster``, ``distinct_entries``, ``wait_until``, ...) are imported from here.

What a session gets: its own PostgreSQL database (created with a unique name, dropped at the
end), its own ``redis-server`` on a free port (the machine's Redis is shared with others),
``moto_server`` for S3 (so the provider fetches presigned HTTP URLs), and one in-process
DashScope emulator backed by the real tiny.en model. Each test gets a :class:`Cluster`: it
starts ``bulkscribe worker``/``beat`` subprocesses in their own sessions (so a test can
``kill -9`` a whole worker process group), and at the end kills them, empties the ledger,
flushes Redis and resets the emulator.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support import (
    AWS_ENV,
    HARVARD,
    Proc,
    RedisServer,
    ffmpeg,
    moto_server,
    say,
    scratch_database,
    spawn,
    wait_until,
)
from support.services import BIN

from pipeline.asr.base import AudioClip
from pipeline.emulator import EmulatorConfig, running_emulator
from pipeline.emulator.backend import TranscriptCache
from pipeline.ledger import ItemRow, Ledger, open_ledger
from pipeline.models import AsrOptions
from pipeline.outputs.transcript import Sentence, Transcript, Word
from pipeline.states import ItemState

BULKSCRIBE = BIN / "bulkscribe"
MEDIA_BUCKET = "media"
ARCHIVE_BUCKET = "archive"
API_KEY = "sk-distributed-test"

# The emulator settings every test starts from (restored after each test).
EMULATOR_DEFAULTS: dict[str, float] = {
    "latency_s": 0.3,
    "fail_rate": 0,
    "throttle_rate": 0,
    "error_rate": 0,
    "lost_rate": 0,
    "stuck_rate": 0,
    "submit_delay_s": 0,
    "result_delay_s": 0,
}

HTTP = httpx.Client(timeout=30.0)

# The cluster fixture's overrides that Cluster.use_defaults() takes away again.
DEFAULTED = (
    "BULKSCRIBE_DISTRIBUTED__",
    "BULKSCRIBE_POLL__",
    "BULKSCRIBE_RETRY__",
    "BULKSCRIBE_LOG_LEVEL",
)


# --- session services -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This session's own redis-server (the broker, the gate and redbeat live in it)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own, dropped at the end."""
    with scratch_database("bulkscribe_dist") as url:
        yield url


@pytest.fixture(scope="session")
def ledger(pg_url: str) -> Ledger:
    """The session database's ledger, as the test process sees it (schema migrated)."""
    return open_ledger(pg_url)


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode on a free port, with the media and archive buckets made."""
    with moto_server(tmp_path_factory.mktemp("moto"), (MEDIA_BUCKET, ARCHIVE_BUCKET)) as url:
        yield url


class EchoEngine:
    """A stand-in for the model behind the emulator: one sentence naming the clip's length.

    The emulator still downloads, probes and normalizes every file for real; only the
    recognition is skipped, so fault and crash tests are not paced by Whisper on 2 cores.
    """

    name = "echo"
    max_clip_s = 300.0

    def transcribe(self, clip: AudioClip, options: AsrOptions) -> Transcript:
        end = int(clip.duration_s * 1000)
        words = (Word(0, end // 2, "echo"), Word(end // 2, end, f"{end}ms", "."))
        return Transcript((Sentence(0, end, f"echo {end}ms.", words),), language="en")


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    """One DashScope emulator for the session over real HTTP (recognition by EchoEngine)."""
    config = EmulatorConfig(
        latency_s=EMULATOR_DEFAULTS["latency_s"], max_concurrency=16, seed=3, workers=2
    )
    with running_emulator(config, engine=EchoEngine(), cache=TranscriptCache()) as base:
        yield base


# --- media ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clips:
    """Short distinct espeak clips and the sentences they speak."""

    files: tuple[Path, ...]
    texts: tuple[str, ...]
    long: Path  # about 40 s: a prepare that takes a moment


@pytest.fixture(scope="session")
def clips(media_dir: Path) -> Clips:
    """Five one-sentence clips (2-3 s each) and one longer file."""
    d = media_dir / "dist"
    d.mkdir(exist_ok=True)
    texts = tuple(HARVARD[4:9])
    files = tuple(say(t, d / f"clip{i}.wav") for i, t in enumerate(texts))
    long = d / "long.wav"
    if not long.exists():
        ffmpeg(["-stream_loop", "12", "-i", str(files[0]), "-c", "copy", str(long)])
    return Clips(files, texts, long)


def manifest(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def distinct_entries(clips: Clips, n: int, *, prefix: str = "f") -> list[dict[str, Any]]:
    """``n`` manifest lines with distinct audio: each clip trimmed at its own start, so no two
    items share a content-addressed media key (each file's submissions can be counted)."""
    out = []
    for i in range(n):
        src = clips.files[i % len(clips.files)]
        out.append(
            {
                "id": f"{prefix}{i:03d}",
                "source": str(src),
                "start_s": round(0.02 * (i // len(clips.files)), 3),
            }
        )
    return out


class SlowFiles:
    """An HTTP server for the media directory that waits before answering each request."""

    def __init__(self, root: Path, delay_s: float) -> None:
        self.delay_s = delay_s
        slow = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self) -> None:
                time.sleep(slow.delay_s)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Workers, beat and the CLI for one test, wired to the session's services."""

    tmp: Path
    env: dict[str, str]
    ledger: Ledger
    emulator: str
    redis: RedisServer
    moto: str
    procs: list[Proc] = field(default_factory=list)

    def use_defaults(self) -> None:
        """Drop the fixture's fast-sweep, short-lease, quick-poll and quick-retry overrides
        and the info log level: workers and beat then run with the shipped defaults."""
        for key in [k for k in self.env if k.startswith(DEFAULTED)]:
            del self.env[key]

    # processes ---------------------------------------------------------------------------
    def worker(
        self,
        concurrency: int = 2,
        queues: str = "prepare,provider,transcribe",
        env: dict[str, str] | None = None,
        wait: bool = True,
        pool: str = "auto",
    ) -> Proc:
        n = len(self.procs)
        proc = spawn(
            f"worker{n}",
            [
                str(BULKSCRIBE),
                "worker",
                "-c",
                str(concurrency),
                "-Q",
                queues,
                "-P",
                pool,
                "-n",
                f"w{n}-{uuid.uuid4().hex[:6]}@%h",
            ],
            self.tmp / f"worker{n}.log",
            {**self.env, **(env or {})},
        )
        self.procs.append(proc)
        if wait:
            wait_until(
                lambda: not proc.alive() or b"ready." in proc.log.read_bytes(),
                60,
                f"{proc.name} to start",
                on_timeout=proc.tail,
            )
            assert proc.alive(), proc.tail()
        return proc

    def beat(self, env: dict[str, str] | None = None) -> Proc:
        proc = spawn(
            "beat", [str(BULKSCRIBE), "beat"], self.tmp / "beat.log", {**self.env, **(env or {})}
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()

    # the CLI -----------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BULKSCRIBE), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, f"bulkscribe {' '.join(args)}:\n{done.stderr}"
        return done

    def cli_json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.cli(*args, "--json", **kw).stdout)

    def submit(
        self,
        entries: list[dict[str, Any]],
        *flags: str,
        name: str = "batch",
        out: Path | None = None,
    ) -> str:
        path = manifest(self.tmp / f"{name}.jsonl", entries)
        out = out or self.tmp / f"{name}-out"
        data = self.cli_json("submit", str(path), "--out", str(out), *flags)
        assert data["total"] == len(entries)
        return str(data["batch_id"])

    def out_dir(self, batch_id: str) -> Path:
        return Path(str((self.ledger.batch(batch_id) or {})["out"]))

    # the ledger --------------------------------------------------------------------------
    def rows(self, batch_id: str) -> list[ItemRow]:
        return self.ledger.list_items(batch_id)

    def states(self, batch_id: str) -> collections.Counter[str]:
        return collections.Counter(r.state.value for r in self.rows(batch_id))

    def wait_states(
        self,
        batch_id: str,
        check: Callable[[collections.Counter[str]], bool],
        timeout_s: float,
        what: str,
        every_s: float = 0.05,
    ) -> None:
        wait_until(
            lambda: check(self.states(batch_id)),
            timeout_s,
            what,
            every_s=every_s,
            on_timeout=lambda: self.report(batch_id),
        )

    def wait_done(self, batch_id: str, timeout_s: float = 120) -> list[ItemRow]:
        """Until every item is terminal and the sweeper has written results.jsonl."""

        def done() -> bool:
            batch = self.ledger.batch(batch_id) or {}
            return batch.get("done_at") is not None and all(
                r.state.terminal for r in self.rows(batch_id)
            )

        wait_until(
            done,
            timeout_s,
            f"batch {batch_id} to finish",
            every_s=0.2,
            on_timeout=lambda: self.report(batch_id),
        )
        return self.rows(batch_id)

    def report(self, batch_id: str) -> str:
        lines = [f"states: {dict(self.states(batch_id))}"]
        rows = sorted(self.rows(batch_id), key=lambda r: r.state is ItemState.SUCCEEDED)
        for r in rows[:8]:
            lines.append(
                f"  {r.key} {r.state.value} tries={r.tries} polls={r.polls} "
                f"next={r.next_run_at} lease={r.lease_until} err={r.error_code} "
                f"{r.error_message}"
            )
        for proc in self.procs:
            lines.append(f"--- {proc.name} (alive={proc.alive()}):\n{proc.tail(15)}")
        return "\n".join(lines)

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        text = (self.out_dir(batch_id) / "results.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    # the emulator ------------------------------------------------------------------------
    def em_config(self, **changes: float) -> dict[str, Any]:
        r = HTTP.post(f"{self.emulator}/_emulator/config", json=changes)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def em_tasks(self) -> list[dict[str, Any]]:
        return HTTP.get(f"{self.emulator}/_emulator/tasks").json()  # type: ignore[no-any-return]

    def submissions(self) -> collections.Counter[str]:
        """How often each file (URL path, query string dropped) was sent to the provider."""
        return collections.Counter(
            urlsplit(u).path for t in self.em_tasks() for u in t["file_urls"]
        )

    def assert_submitted_once(self, rows: list[ItemRow]) -> None:
        """Every item's file reached the provider exactly once, and nothing else did."""
        sent = self.submissions()
        expected = {urlsplit(str(r.media_url)).path for r in rows}
        assert len(expected) == len(rows), "test media must be distinct per item"
        assert set(sent) == expected, (sorted(sent), sorted(expected))
        assert all(n == 1 for n in sent.values()), {p: n for p, n in sent.items() if n != 1}


@pytest.fixture
def cluster(
    tmp_path: Path,
    pg_url: str,
    ledger: Ledger,
    redis_server: RedisServer,
    moto_url: str,
    emulator: str,
) -> Iterator[Cluster]:
    """Settings for fast sweeps and short leases; everything torn down after the test."""
    env = {
        **service_env(pg_url, redis_server.url, moto_url, emulator, scratch=tmp_path),
        "BULKSCRIBE_LOG_LEVEL": "info",
        "BULKSCRIBE_LOCAL__CPU_THREADS": "1",
        "BULKSCRIBE_DISTRIBUTED__SWEEP_S": "1",
        "BULKSCRIBE_DISTRIBUTED__LEASE_S": "5",
        "BULKSCRIBE_DISTRIBUTED__REDISPATCH_S": "5",
        "BULKSCRIBE_DISTRIBUTED__VISIBILITY_TIMEOUT_S": "3600",
        "BULKSCRIBE_POLL__FIRST_S": "0.5",
        "BULKSCRIBE_POLL__MAX_S": "1",
        "BULKSCRIBE_RETRY__BACKOFF_BASE_S": "0.2",
        "BULKSCRIBE_RETRY__BACKOFF_MAX_S": "2",
        "BULKSCRIBE_PROVIDER__REQUESTS_PER_S": "200",
    }
    HTTP.post(f"{emulator}/_emulator/reset").raise_for_status()
    HTTP.post(f"{emulator}/_emulator/config", json=EMULATOR_DEFAULTS).raise_for_status()
    c = Cluster(tmp_path, env, ledger, emulator, redis_server, moto_url)
    try:
        yield c
    finally:
        c.stop_all()
        empty_ledger(ledger)
        if redis_server.proc is not None and redis_server.proc.alive():
            redis_server.client().flushall()
        HTTP.post(f"{emulator}/_emulator/reset").raise_for_status()
        HTTP.post(f"{emulator}/_emulator/config", json=EMULATOR_DEFAULTS).raise_for_status()
        shutil.rmtree(tmp_path / "bulkscribe-media", ignore_errors=True)


def service_env(
    database_url: str, broker_url: str, moto: str, emulator: str, *, scratch: Path
) -> dict[str, str]:
    """This environment pointed at these services: the ledger, the broker, S3 through moto,
    DashScope (fun-asr) through the emulator. The caller's own BULKSCRIBE_* and PROMETHEUS_*
    variables are left out, so workers start from the shipped defaults."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("BULKSCRIBE_", "PROMETHEUS_"))}
    return {
        **keep,
        **AWS_ENV,
        "BULKSCRIBE_DATABASE_URL": database_url,
        "BULKSCRIBE_BROKER_URL": broker_url,
        "BULKSCRIBE_STORAGE_URL": f"s3://{MEDIA_BUCKET}/norm",
        "BULKSCRIBE_S3_ENDPOINT_URL": moto,
        "DASHSCOPE_API_KEY": API_KEY,
        "BULKSCRIBE_DASHSCOPE_BASE_URL": f"{emulator}/api/v1",
        "BULKSCRIBE_ENGINE": "dashscope",
        "BULKSCRIBE_MODEL": "fun-asr",
        "BULKSCRIBE_SCRATCH_DIR": str(scratch),
    }


def empty_ledger(ledger: Ledger) -> None:
    """Every batch, item and attempt gone (budgets too, by cascade)."""
    from sqlalchemy import text

    with ledger.engine.begin() as conn:
        conn.execute(text("TRUNCATE attempts, items, batches CASCADE"))  # + budgets
