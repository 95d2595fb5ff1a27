"""Waiting for something another process or thread does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["WaitTimeout", "wait_until"]


class WaitTimeout(AssertionError):
    """What was waited for did not happen in time (a failed assertion, to pytest)."""


def wait_until(
    check: Callable[[], Any],
    timeout_s: float,
    what: str,
    *,
    every_s: float = 0.1,
    on_timeout: Callable[[], str] | None = None,
    ignoring: tuple[type[Exception], ...] = (),
) -> Any:
    """Call ``check`` every ``every_s`` until it returns something truthy, and return that.

    After ``timeout_s`` raise :class:`WaitTimeout` naming ``what``, with ``on_timeout()``'s
    report (logs, states) below it. Exceptions of the ``ignoring`` types count as "not yet"
    (a server still starting refuses connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except ignoring:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}{extra}")
        time.sleep(every_s)
