"""`bulkscribe worker --pool auto`: threads only where no CPU work can land."""

from __future__ import annotations

import pytest

from pipeline.cli.ops import PROVIDER_THREADS, worker_pool


@pytest.mark.parametrize(
    ("queues", "pool", "concurrency", "expected"),
    [
        ("provider", "auto", None, ("threads", PROVIDER_THREADS)),
        (" provider ", "auto", 3, ("threads", 3)),
        ("prepare,provider,transcribe", "auto", None, ("prefork", None)),
        ("provider,transcribe", "auto", 2, ("prefork", 2)),
        ("prepare", "auto", None, ("prefork", None)),
        ("provider", "prefork", None, ("prefork", None)),
        ("prepare", "threads", 4, ("threads", 4)),
    ],
)
def test_auto_pool_is_threads_for_the_provider_queue_alone(
    queues: str, pool: str, concurrency: int | None, expected: tuple[str, int | None]
) -> None:
    assert worker_pool(queues, pool, concurrency) == expected


def test_workers_log_at_info_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """worker/beat log at info by default (the setting's own default, warning, is for
    interactive commands); a log_level setting or --log-level/-v wins."""
    from pipeline.cli.ops import _service_settings

    for key in ("BULKSCRIBE_LOG_LEVEL", "BULKSCRIBE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    assert _service_settings(None, None).log_level == "info"
    assert _service_settings(None, "DEBUG").log_level == "debug"
    monkeypatch.setenv("BULKSCRIBE_LOG_LEVEL", "error")
    assert _service_settings(None, None).log_level == "error"
    assert _service_settings(None, "warning").log_level == "warning"
