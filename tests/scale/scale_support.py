"""Fixtures and helpers for the scale tests: a fresh PostgreSQL database, a private
redis-server (the broker ``submit`` queues its first steps on), moto in server mode, and a
``bulkscribe`` runner whose children's peak memory can be read back."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import AWS_ENV, RedisServer, moto_server, scratch_database
from support.services import BIN


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped at the end."""
    with scratch_database("bulkscribe_scale") as url:
        yield url


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def env(pg_url: str, broker_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **AWS_ENV,
        "BULKSCRIBE_DATABASE_URL": pg_url,
        "BULKSCRIBE_BROKER_URL": broker_url,
    }


def bulkscribe(env: dict[str, str], *args: str, timeout: float = 600) -> Any:
    """Run ``bulkscribe ARGS --json``; its parsed output."""
    return bulkscribe_measured(env, *args, timeout=timeout)[0]


def bulkscribe_measured(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[Any, float]:
    """Run ``bulkscribe ARGS --json``: its parsed output and its peak RSS in MB.

    The peak is the process's own VmHWM, read while it runs: getrusage's ru_maxrss would
    start from the size of this (forked) test process, which a full test run makes large."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [str(BIN / "bulkscribe"), *args, "--json"], env=env, stdout=out, stderr=err, text=True
        )
        peak_kb, deadline = 0, time.monotonic() + timeout
        while proc.poll() is None:
            assert time.monotonic() < deadline, "bulkscribe did not finish in time"
            peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        assert proc.returncode == 0, err.read()[-2000:]
        return json.loads(out.read()), peak_kb / 1024


def vm_hwm_kb(pid: int) -> int:
    """A live process's peak resident set (kB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def write_manifest(path: Path, n: int, *, start: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"rec-{i:07d}", "source": f"/data/rec-{i:07d}.wav"}) + "\n")
    return path


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())
