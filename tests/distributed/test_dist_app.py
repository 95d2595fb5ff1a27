"""The Celery app as ``celery -A workers.app`` sees it: configured from the environment."""

from __future__ import annotations

import os
import subprocess
import sys


def test_celery_dash_a_app_is_configured_from_the_environment() -> None:
    """Importing workers.app without `bulkscribe worker` (as `celery -A workers.app` does)
    configures it from BULKSCRIBE_* on first use, without recursing into its own config."""
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from workers.app import app\n"
        "print(app.conf.broker_url, app.conf.task_acks_late, app.conf.beat_scheduler)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKSCRIBE_")}
    env["BULKSCRIBE_BROKER_URL"] = "redis://127.0.0.1:1/7"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "redis://127.0.0.1:1/7",
        "True",
        "workers.beat:ResilientRedBeatScheduler",
    ]
    assert "RecursionError" not in done.stderr
