"""Fixtures for the DashScope client tests: a scripted transport and a client on it."""

from __future__ import annotations

import pytest
from ds_fakes import Script, make_client

from pipeline.asr.dashscope import DashScopeClient


@pytest.fixture
def script() -> Script:
    """An empty answer script; tests queue what the 'service' says."""
    return Script()


@pytest.fixture
def client(script: Script) -> DashScopeClient:
    """A client whose every request goes to ``script``."""
    return make_client(script)
