"""Fixtures for notification tests: a loopback webhook receiver that verifies every delivery
with the ``standardwebhooks`` library, and the settings every test here needs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from notify_support import SECRET, Receiver, serve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A threaded HTTP server on 127.0.0.1 that verifies each webhook it is sent."""
    rx = Receiver("")
    httpd, _thread = serve(rx)
    try:
        yield rx
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings every test here needs: the secret, loopback endpoints allowed."""
    env = {"BULKSCRIBE_NOTIFY_SECRET": SECRET, "BULKSCRIBE_NOTIFY__ALLOW_PRIVATE": "true"}
    for name in list(os.environ):
        if name.startswith("BULKSCRIBE_"):
            monkeypatch.delenv(name)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
