"""Fixtures and helpers for the scale tests: a fresh PostgreSQL database, a private
redis-server (the broker ``submit`` queues its first steps on), moto in server mode, and a
``bulkscribe`` runner whose children's peak memory can be read back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import scratch_database

BIN = Path(sys.executable).parent
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped at the end."""
    with scratch_database("bulkscribe_scale") as url:
        yield url


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() is None,
        15,
        "redis-server",
    )
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        env={**os.environ, **AWS_ENV},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: socket.create_connection(("127.0.0.1", port), 0.2).close() is None,
        30,
        "moto_server",
    )
    yield url
    proc.kill()
    proc.wait()
    log.close()


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
