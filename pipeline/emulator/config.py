"""The emulator's settings: one frozen value, built once by the CLI or a test.

Only the fault rates, ``latency_s`` and the two test delays may change while the emulator
runs (``POST /_emulator/config``); :meth:`EmulatorConfig.with_changes` checks such a patch and
returns a new value, so a request never sees half an update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pipeline.settings import DownloadSettings

RATE_FIELDS = ("fail_rate", "throttle_rate", "error_rate", "lost_rate", "stuck_rate")
# Test hooks that hold an answer back, so a test can act while a request is on the wire:
# ``submit_delay_s`` after a task is created and before E1 answers (kill a client between
# "the provider has the task" and "the client knows its id"), ``result_delay_s`` before E3
# serves a result document (kill a client while it persists).
DELAY_FIELDS = ("submit_delay_s", "result_delay_s")
RUNTIME_FIELDS = (*RATE_FIELDS, "latency_s", *DELAY_FIELDS)


class ConfigInvalid(ValueError):
    """A setting, or a runtime patch, that the emulator cannot honour."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything that shapes the emulator's behaviour; see ``bulkscribe emulator --help``."""

    api_key: str | None = None  # None: any (or no) Bearer key is accepted
    latency_s: float = 1.0  # minimum time a task spends RUNNING
    max_concurrency: int = 4  # tasks RUNNING at once; the rest wait PENDING, FIFO
    seed: int = 0
    fail_rate: float = 0.0  # task ends FAILED / InternalError
    throttle_rate: float = 0.0  # API request answered 429 Throttling
    error_rate: float = 0.0  # API request answered 500 InternalError
    lost_rate: float = 0.0  # task answers UNKNOWN once it would have finished
    stuck_rate: float = 0.0  # task stays RUNNING until it expires
    task_ttl_s: float = 86_400.0  # tasks and result URLs live this long after they end
    submit_delay_s: float = 0.0  # E1: pause after the task is created, before answering
    result_delay_s: float = 0.0  # E3: pause before a result document is sent
    max_files_per_task: int = 100
    model: str = "tiny.en"  # local engine behind every DashScope model name
    public_url: str | None = None  # base of result/upload URLs; None: the request's own
    workers: int = 2  # transcription threads (each pool: async tasks, sync calls)
    sync_max_duration_s: float = 300.0  # qwen3-asr-flash: <= 5 min ...
    sync_max_bytes: int = 10 * 1024 * 1024  # ... and <= 10 MB (data URIs: after encoding)
    upload_ttl_s: float = 48 * 3600.0  # oss:// temporary files
    upload_max_bytes: int = 100 * 1024 * 1024
    # Sources named by clients are fetched like the pipeline fetches them
    # (pipeline.inputs.netguard): a wall-clock deadline per download; link-local and metadata
    # addresses refused, private ones too unless allowed (the emulator usually fetches from a
    # bucket on the same network).
    download_deadline_s: float = DownloadSettings().deadline_s
    allow_private: bool = True

    def __post_init__(self) -> None:
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigInvalid(f"{name} must be within [0, 1], not {value}")
        # One draw decides a task's fate and one a request's fault, so each group shares [0, 1).
        if self.fail_rate + self.lost_rate + self.stuck_rate > 1.0 + 1e-9:
            raise ConfigInvalid("fail_rate + lost_rate + stuck_rate must not exceed 1")
        if self.throttle_rate + self.error_rate > 1.0 + 1e-9:
            raise ConfigInvalid("throttle_rate + error_rate must not exceed 1")
        for name in ("latency_s", *DELAY_FIELDS):
            if getattr(self, name) < 0:
                raise ConfigInvalid(f"{name} must not be negative")
        for name in ("max_concurrency", "max_files_per_task", "workers"):
            if getattr(self, name) < 1:
                raise ConfigInvalid(f"{name} must be at least 1")
        if self.task_ttl_s <= 0:
            raise ConfigInvalid("task_ttl_s must be positive")
        if self.download_deadline_s <= 0:
            raise ConfigInvalid("download_deadline_s must be positive")

    def with_changes(self, patch: Mapping[str, Any]) -> EmulatorConfig:
        """A copy with runtime fields replaced; anything else in ``patch`` is refused."""
        unknown = sorted(set(patch) - set(RUNTIME_FIELDS))
        if unknown:
            raise ConfigInvalid(
                f"cannot change {', '.join(unknown)} at runtime; "
                f"allowed: {', '.join(RUNTIME_FIELDS)}"
            )
        values: dict[str, Any] = {}
        for name, value in patch.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigInvalid(f"{name} must be a number, not {value!r}")
            values[name] = float(value)
        return replace(self, **values)

    def public(self) -> dict[str, Any]:
        """The settings as JSON, the key masked."""
        out = asdict(self)
        out["api_key"] = "***" if self.api_key else None
        return out


CONFIG_FIELDS = tuple(f.name for f in fields(EmulatorConfig))
