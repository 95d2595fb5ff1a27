"""The Celery app: queues, JSON messages, and the reliability settings.

Nothing is read at import time. ``configure()`` is called with the one Settings object by
``bulkscribe worker``/``beat``; ``celery -A workers.app`` gets the same through the
``on_configure`` hook, which reads the environment (and ``BULKSCRIBE_CONFIG``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Queue

from pipeline.settings import Settings, load_settings
from workers.schedules import beat_schedule

QUEUES = ("prepare", "provider", "transcribe")

ROUTES = {
    "bulkscribe.prepare": {"queue": "prepare"},
    "bulkscribe.transcribe": {"queue": "transcribe"},
    "bulkscribe.submit": {"queue": "provider"},
    "bulkscribe.poll": {"queue": "provider"},
    "bulkscribe.reconcile": {"queue": "provider"},
    "bulkscribe.sweep": {"queue": "provider"},
    "bulkscribe.scheduled_run": {"queue": "provider"},
    "bulkscribe.notify": {"queue": "provider"},
}

app = Celery("bulkscribe", set_as_current=False)
app.conf.imports = ("workers.tasks", "workers.signals")
_settings: Settings | None = None
_configured: set[int] = set()  # id() of the apps configure() has run on


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def configure(target: Celery, s: Settings) -> None:
    global _settings
    _settings = s
    dist = s.distributed
    target.conf.update(celery_config(s))
    target.conf.beat_schedule = beat_schedule(dist)
    _configured.add(id(target))


def celery_config(s: Settings) -> dict[str, Any]:
    dist = s.distributed
    return {
        "broker_url": s.broker_url,
        "broker_connection_retry_on_startup": True,
        # Longer than any countdown we set and any step we run, so Redis never hands a
        # message to a second worker while the first still holds it.
        "broker_transport_options": {"visibility_timeout": dist.visibility_timeout_s},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,  # a message is done when the step is, not when it starts
        "task_reject_on_worker_lost": True,  # a killed child's message goes back to the queue
        "worker_prefetch_multiplier": 1,  # one long transcription never hides others behind it
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # kombu ships py.typed, but Queue.__init__ has no annotations.
        "task_queues": [Queue(q) for q in QUEUES],  # type: ignore[no-untyped-call]
        "task_default_queue": "provider",
        "task_routes": ROUTES,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # redbeat, made to survive a broker restart (see workers/beat.py).
        "beat_scheduler": "workers.beat:ResilientRedBeatScheduler",
        "redbeat_redis_url": s.broker_url,
        # Explicit, so redbeat does not fall back to broker_transport_options (deprecated,
        # warns on every start, and ends in redbeat 2.5).
        "redbeat_redis_options": {},
        "redbeat_key_prefix": "bulkscribe:redbeat",
        "redbeat_lock_timeout": max(60, int(dist.sweep_s * 5)),
        "beat_max_loop_interval": min(5, max(1, int(dist.sweep_s))),
        "timezone": "UTC",
        "enable_utc": True,
    }


@app.on_configure.connect
def _configure_from_env(sender: Celery, **_: Any) -> None:
    # This runs inside Celery's first read of ``app.conf``. Reading ``sender.conf`` here
    # (as this hook once did) starts that same read again: endless recursion, which the
    # signal swallows and logs, leaving ``celery -A workers.app`` with no broker at all.
    if id(sender) not in _configured:
        configure(sender, settings())
