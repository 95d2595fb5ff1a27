"""Settings: read once at the process edge, handed down in frozen slices.

Sources, strongest first: command-line flags, ``BULKSCRIBE_*`` environment variables (nested
groups with ``__``, e.g. ``BULKSCRIBE_LOCAL__BEAM_SIZE=5``), a TOML file (``--config`` or
``BULKSCRIBE_CONFIG``), then the defaults below. ``DASHSCOPE_API_KEY`` is read as in
DashScope's own SDK. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AfterValidator,
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

from pipeline.models import DEFAULT_MAX_SCRATCH_BYTES

INTL_BASE_URL = "https://dashscope-intl.aliyuncs.com/api/v1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalEngineSettings(_Frozen):
    """faster-whisper knobs; defaults follow the measurements in the README."""

    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0)  # 0: cores / workers
    # 5: on real speech tiny.en's WER halves (9.9 % to 4.2 %) for 4 % more CPU; about 1.4x
    # the CPU on long continuous speech (bench/beam_bench.py, README).
    beam_size: int = Field(5, ge=1)
    vad_filter: bool = True
    window_s: float = Field(300.0, gt=10)  # long audio is fed in windows of about this size
    download_root: Path | None = None  # for hub model names only
    # Offline by default: a hub model name loads only if it is already in the download cache.
    allow_download: bool = False
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: to English
    context: str | None = None  # initial prompt; an item's own ``context`` wins
    hotwords: str | None = None  # words to favour; an item's own ``hotwords`` win


class SubtitleSettings(_Frozen):
    """SRT/WebVTT cue layout."""

    max_line_width: int = Field(42, ge=10, le=200)  # characters (CJK counts double)
    max_line_count: int = Field(2, ge=1, le=10)


class LimitsSettings(_Frozen):
    """Override the target model's own limits (None keeps the model's)."""

    max_duration_s: float | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, gt=0)
    # Normalized audio one item may write to scratch; over it the item fails too_large.
    max_scratch_bytes: int = Field(DEFAULT_MAX_SCRATCH_BYTES, gt=0)


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
    """How ``http(s)://`` sources are fetched (``pipeline/inputs/sources.py``, ``netguard.py``)."""

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


def check_notify_url(url: str) -> str:
    """An endpoint must be an absolute http(s) URL; ValueError says why not."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise ValueError(f"notify URL {url!r}: use an http:// or https:// URL")
    return url


NotifyUrls = tuple[Annotated[str, AfterValidator(check_notify_url)], ...]


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
    notify_urls: NotifyUrls = ()  # told about this schedule's runs (beside notify.urls)
    max_audio_hours: float | None = Field(None, gt=0)  # per scheduled run
    max_cost: float | None = Field(None, ge=0)


# Standard Webhooks' retry schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h after each failure (eight tries over about 27.6 hours).
NOTIFY_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class NotifySettings(_Frozen):
    """Signed webhooks for batch events (``pipeline/notify/``); the secret is
    ``BULKSCRIBE_NOTIFY_SECRET``."""

    urls: NotifyUrls = ()  # endpoints told about every batch (beside --notify)
    flush_s: float = Field(30.0, ge=0)  # an embedded run delivers for at most this long
    timeout_s: float = Field(10.0, gt=0)  # one delivery, connect to last byte read
    # Seconds to wait before each try, the first counted from the event; Retry-After can
    # lengthen a wait, never shorten it.
    retry_schedule_s: tuple[float, ...] = Field(NOTIFY_RETRY_SCHEDULE_S, min_length=1)
    # Endpoints on private, loopback or other non-global addresses are refused unless set
    # (link-local and cloud metadata addresses always are).
    allow_private: bool = False
    console_url: str | None = None  # batch.completed links to <console_url>/batches/<id>
    # A batch.items_dead waits this long for more of its batch's items to die before its
    # first try: one delivery lists them all.
    dead_window_s: float = Field(10.0, ge=0)


class DistributedSettings(_Frozen):
    sweep_s: float = Field(30.0, gt=0)  # how often beat sweeps the ledger
    # A claim unrenewed this long is presumed dead; a running step renews it every third.
    lease_s: float = Field(60.0, gt=0)
    redispatch_s: float = Field(300.0, gt=0)  # a queued step not started by then is queued again
    max_prepared: int = Field(500, ge=1)  # normalized files waiting for the next step
    # Submissions or polls carried by one message at most (workers.dispatch.packs).
    jobs_per_message: int = Field(10, ge=1, le=100)
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

    # Standard Webhooks signing secret (whsec_ + base64) for notifications.
    notify_secret: SecretStr | None = None

    # `bulkscribe console`: without a token it serves on a loopback address only; the
    # read-only token lets viewers in but refuses every action (403)
    console_token: SecretStr | None = None
    console_readonly_token: SecretStr | None = None

    log_level: str = "warning"  # what reaches stderr; the JSON log file gets everything

    local: LocalEngineSettings = LocalEngineSettings()
    subtitles: SubtitleSettings = SubtitleSettings()
    limits: LimitsSettings = LimitsSettings()
    manifest: ManifestSettings = ManifestSettings()
    retry: RetrySettings = RetrySettings()
    download: DownloadSettings = DownloadSettings()
    poll: PollSettings = PollSettings()
    provider: ProviderSettings = ProviderSettings()
    distributed: DistributedSettings = DistributedSettings()
    notify: NotifySettings = NotifySettings()
    budget: BudgetSettings = BudgetSettings()
    plan: PlanSettings = PlanSettings()
    prices: dict[str, Price] = {}  # model -> price; empty: costs are unknown

    @field_validator("formats", mode="before")
    @classmethod
    def _split_formats(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        known = ("json", "txt", "srt", "vtt", "tsv")
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown format(s) {', '.join(bad)}; choose from {','.join(known)}")
        return tuple(dict.fromkeys(v))

    @field_validator("notify_secret")
    @classmethod
    def _whsec(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            from pipeline.notify.signing import check_secret

            check_secret(v.get_secret_value())
        return v

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
    bound = cast(type[Settings], type("Settings", (Settings,), {"_toml_file": toml_path}))
    return bound(**overrides)
