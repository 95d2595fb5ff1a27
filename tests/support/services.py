"""Real services of a test's own: PostgreSQL databases, redis-server, moto_server, and the
subprocesses that run them (each in its own session, so a kill takes its whole group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.emulator.server import free_port

from .waiting import wait_until

__all__ = [
    "AWS_ENV",
    "BIN",
    "PG_ADMIN",
    "Proc",
    "RedisServer",
    "free_port",
    "moto_server",
    "s3_client",
    "scratch_database",
    "spawn",
]

BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth on localhost
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of the caller's own (its URL), dropped at the end together with
    any connection still open to it."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@dataclass
class Proc:
    """A subprocess in its own session: ``kill()`` signals its whole process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL, *, wait_s: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=wait_s)

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL if it lingers; the group either way."""
        if self.alive():
            self.kill(signal.SIGTERM, wait_s=5.0)
        self.kill(signal.SIGKILL, wait_s=5.0)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Proc(name, popen, log)


class RedisServer:
    """Our own redis-server (no persistence) on a fixed port, restartable by a test."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            self.workdir / "redis.log",
        )
        client = self.client()
        wait_until(
            client.ping,
            15,
            f"redis-server on {self.port}",
            on_timeout=self.proc.tail,
            ignoring=(Exception,),
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port)


@contextlib.contextmanager
def moto_server(workdir: Path, buckets: tuple[str, ...] = ()) -> Iterator[str]:
    """moto in server mode on a free port (its URL), with ``buckets`` made; killed at the end."""
    import httpx

    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        "moto",
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto.log",
        env={**os.environ, **AWS_ENV},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/moto-api/", timeout=5).status_code < 500,
            30,
            "moto_server",
            on_timeout=proc.tail,
            ignoring=(httpx.TransportError,),
        )
        s3 = s3_client(url)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield url
    finally:
        proc.kill()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
