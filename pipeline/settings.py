"""Settings: read once at the process edge, handed down in frozen slices.

Sources, strongest first: command-line flags, ``BULKSCRIBE_*`` environment variables (nested
groups with ``__``, e.g. ``BULKSCRIBE_LOCAL__BEAM_SIZE=5``), a TOML file (``--config`` or
``BULKSCRIBE_CONFIG``), then the defaults below. ``DASHSCOPE_API_KEY`` is read as in
DashScope's own SDK. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

INTL_BASE_URL = "https://dashscope-intl.aliyuncs.com/api/v1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalEngineSettings(_Frozen):
    """faster-whisper knobs; defaults follow the measurements in the README."""

    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0)  # 0: cores / workers
    beam_size: int = Field(1, ge=1)
    vad_filter: bool = True
    window_s: float = Field(300.0, gt=10)  # long audio is fed in windows of about this size
    download_root: Path | None = None  # for hub model names only


class LimitsSettings(_Frozen):
    """Override the target model's own limits (None keeps the model's)."""

    max_duration_s: float | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, gt=0)


class ManifestSettings(_Frozen):
    """What a manifest given to ``run``/``submit`` may be."""

    max_bytes: int = Field(1024**3, gt=0)  # a bigger manifest is refused (exit 2) unread


class RetrySettings(_Frozen):
    max_attempts: int = Field(4, ge=1)  # tries per stage before FAILED (embedded) / DEAD
    # 429s waited out in a row (without spending tries) before the item is given up: with
    # the default backoff, about an hour of throttling.
    max_throttled: int = Field(20, ge=1)
    backoff_base_s: float = Field(2.0, ge=0)
    backoff_max_s: float = Field(300.0, ge=0)


class DownloadSettings(_Frozen):
    """How ``http(s)://`` sources are fetched (``pipeline/sources.py``, ``netguard.py``)."""

    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)  # silence between two reads
    # Wall clock for one download, first byte to last, however the server paces it. 15 min
    # carries a 1 GB video at 1.2 MB/s (10 Mbit/s) and an hour of 128 kbit/s MP3 (58 MB) at
    # 65 kB/s, while a hostile or stalled server holds a worker at most this long per try
    # (4 tries by default). Raise it for multi-GB files over slow links.
    deadline_s: float = Field(900.0, gt=0)
    # Private, loopback and other non-global addresses (10/8, 192.168/16, 127/8, fc00::/7,
    # ...). Allowed for a run on your own machine; set false on a fleet that takes manifests
    # from others. Link-local and cloud metadata addresses are refused either way.
    allow_private: bool = True


class PollSettings(_Frozen):
    first_s: float = Field(2.0, gt=0)
    max_s: float = Field(60.0, gt=0)
    give_up_after_s: float = Field(14 * 3600.0, gt=0)  # past the provider's 12 h job limit


class ProviderSettings(_Frozen):
    """How hard bulkscribe leans on the ASR provider (shared through Redis when distributed)."""

    batch_size: int = Field(10, ge=1, le=100)  # files per Fun-ASR task
    max_inflight_tasks: int = Field(200, ge=1)  # provider tasks submitted and not finished
    requests_per_s: float = Field(10.0, gt=0)  # submits + polls, whole fleet


class Price(_Frozen):
    """What a model costs per audio hour or second (one of the two), as the provider bills
    it. Prices change and differ by region: none are built in."""

    per_hour: float | None = Field(None, ge=0)
    per_second: float | None = Field(None, ge=0)
    currency: str = "USD"

    @model_validator(mode="after")
    def _one_rate(self) -> Price:
        if (self.per_hour is None) == (self.per_second is None):
            raise ValueError("a price needs exactly one of per_hour or per_second")
        return self

    @property
    def rate_per_s(self) -> float:
        return self.per_second if self.per_second is not None else (self.per_hour or 0) / 3600


class BudgetSettings(_Frozen):
    """Caps on one run or batch: items are admitted in manifest order while they fit."""

    max_audio_hours: float | None = Field(None, gt=0)
    max_cost: float | None = Field(None, ge=0)  # in the models' price currency


class PlanSettings(_Frozen):
    """What `bulkscribe plan` assumes when it estimates wall time."""

    # Seconds of processing per second of audio for the local engine, one worker. None:
    # measured once per model and compute type on this machine and cached.
    local_rtf: float | None = Field(None, gt=0)
    # Typical seconds from submit to result for one provider task, by model.
    provider_latency_s: dict[str, float] = {}
    default_latency_s: float = Field(60.0, gt=0)


class ScheduleSettings(_Frozen):
    """A recurring run: transcribe new files under ``source`` into ``out``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    cron: str = "0 2 * * *"  # minute hour day-of-month month day-of-week (UTC)
    source: str  # s3://bucket/prefix/, oss://..., file:///dir/
    out: str
    engine: Literal["local", "dashscope"] | None = None
    model: str | None = None
    language: str | None = None
    max_audio_hours: float | None = Field(None, gt=0)  # per scheduled run
    max_cost: float | None = Field(None, ge=0)


class DistributedSettings(_Frozen):
    sweep_s: float = Field(30.0, gt=0)  # how often beat sweeps the ledger
    lease_s: float = Field(900.0, gt=0)  # a claim unrenewed this long is presumed dead
    redispatch_s: float = Field(300.0, gt=0)  # a queued step not started by then is queued again
    max_prepared: int = Field(500, ge=1)  # normalized files waiting for the next step
    visibility_timeout_s: int = Field(4 * 3600, ge=60)  # above every countdown and step
    metrics_port: int | None = None  # Prometheus endpoint of `bulkscribe worker`
    schedules: tuple[ScheduleSettings, ...] = ()


class Settings(BaseSettings):
    """Every knob bulkscribe has. Built in ``cli.main()`` or the worker's start signal."""

    model_config = SettingsConfigDict(
        env_prefix="BULKSCRIBE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
    )
    _toml_file: ClassVar[Path | None] = None

    # what to run
    engine: Literal["local", "dashscope"] = "local"
    model: str = "tiny.en"
    language: str | None = None
    # NoDecode: BULKSCRIBE_FORMATS=json,srt is a comma list, not JSON.
    formats: Annotated[tuple[str, ...], NoDecode] = ("json", "txt", "srt", "vtt")
    workers: int = Field(2, ge=1, le=64)

    # where state lives
    database_url: str | None = None  # None: SQLite under the output dir
    scratch_dir: Path | None = None  # None: the system temp dir
    broker_url: str = "redis://127.0.0.1:6379/0"
    storage_url: str | None = None  # s3://bucket/prefix, oss://bucket/prefix, file:///dir
    s3_endpoint_url: str | None = None

    # DashScope
    dashscope_base_url: str = INTL_BASE_URL
    dashscope_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "DASHSCOPE_API_KEY", "BULKSCRIBE_DASHSCOPE_API_KEY", "dashscope_api_key"
        ),
    )

    log_level: str = "warning"  # what reaches stderr; the JSON log file gets everything

    local: LocalEngineSettings = LocalEngineSettings()
    limits: LimitsSettings = LimitsSettings()
    manifest: ManifestSettings = ManifestSettings()
    retry: RetrySettings = RetrySettings()
    download: DownloadSettings = DownloadSettings()
    poll: PollSettings = PollSettings()
    provider: ProviderSettings = ProviderSettings()
    distributed: DistributedSettings = DistributedSettings()
    budget: BudgetSettings = BudgetSettings()
    plan: PlanSettings = PlanSettings()
    prices: dict[str, Price] = {}  # model -> price; empty: costs are unknown

    @field_validator("formats", mode="before")
    @classmethod
    def _split_formats(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        known = {"json", "txt", "srt", "vtt"}
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown format(s) {', '.join(bad)}; choose from json,txt,srt,vtt")
        return tuple(dict.fromkeys(v))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


class ConfigFileMissing(Exception):
    pass


def load_settings(config: str | os.PathLike[str] | None = None, **flags: Any) -> Settings:
    """Build the one Settings object; ``flags`` (None values dropped) win over everything."""
    path = config or os.environ.get("BULKSCRIBE_CONFIG")
    overrides = {k: v for k, v in flags.items() if v is not None}
    if not path:
        return Settings(**overrides)
    toml_path = Path(path)
    if not toml_path.is_file():
        raise ConfigFileMissing(f"config file {toml_path} does not exist")
    bound = type("Settings", (Settings,), {"_toml_file": toml_path})
    return bound(**overrides)
