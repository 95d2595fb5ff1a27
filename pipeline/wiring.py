"""Build the collaborators a FlowContext needs from Settings, in one place.

The CLI (embedded runs) and the Celery worker's start signal both call this; neither builds
engines, clients or stores on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pipeline.asr.base import ClipEngine
from pipeline.asr.catalog import Family, ModelInfo, model_info
from pipeline.errors import ConfigError, FailureCode
from pipeline.flow.client import Provider
from pipeline.flow.context import FlowContext
from pipeline.flow.limits import LocalGate, RateLimiter, SubmitGate, ThrottledClient, TokenBucket
from pipeline.flow.media import MediaKeeper, Publisher
from pipeline.flow.outputs import OutputSink
from pipeline.flow.rules import StepRules
from pipeline.inputs.netguard import AddressPolicy, guarded_client
from pipeline.ledger import Ledger
from pipeline.settings import Settings
from pipeline.stages.upload import PresignPublisher, TemporaryUploadPublisher
from pipeline.storage import LocalStore, ObjectStore, open_store, split_url

PRESIGN_S = 48 * 3600  # outlives the provider's queueing; DashScope's own temp URLs last 48 h


def download_client(settings: Settings) -> httpx.Client:
    """The client ``http(s)://`` sources are fetched with: the address policy is applied to
    every connection (pipeline.inputs.netguard). Not the provider's client: DashScope may sit on
    a private address (the emulator) or behind a proxy, which the policy would refuse."""
    d = settings.download
    return guarded_client(
        AddressPolicy(allow_private=d.allow_private),
        connect_timeout_s=d.connect_timeout_s,
        read_timeout_s=d.read_timeout_s,
    )


def http_client(settings: Settings) -> httpx.Client:
    timeout = httpx.Timeout(
        settings.download.read_timeout_s, connect=settings.download.connect_timeout_s
    )
    return httpx.Client(
        timeout=timeout,
        headers={"user-agent": "bulkscribe"},
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    )


class ClipEngines:
    """One engine per model name, created on first use and shared by all threads."""

    def __init__(self, settings: Settings, provider: Callable[[], ThrottledClient] | None) -> None:
        self.settings = settings
        self.provider = provider
        self._engines: dict[str, ClipEngine] = {}
        self._lock = threading.Lock()

    def __call__(self, info: ModelInfo) -> ClipEngine:
        with self._lock:
            engine = self._engines.get(info.model)
            if engine is None:
                engine = self._engines[info.model] = self._build(info)
            return engine

    def _build(self, info: ModelInfo) -> ClipEngine:
        if info.family is Family.LOCAL:
            from pipeline.asr.local import LocalEngine

            return LocalEngine(info.model, self.settings.local, concurrency=self.settings.workers)
        if info.family in (Family.QWEN_ASR, Family.OMNI) and self.provider is not None:
            from pipeline.asr.dashscope import DashScopeClipEngine

            return DashScopeClipEngine(
                self.provider(), info.model, max_clip_s=info.max_clip_s or 180.0
            )
        raise ConfigError(FailureCode.CONFIG_INVALID, f"{info.model} is not transcribed in place")


def preflight(settings: Settings) -> None:
    """What must hold before the first file is touched: the engine, the run's model and its
    options, the credentials. Cheap: no model is loaded and nothing goes to the network.
    Raises the :class:`ConfigError` a whole run would otherwise fail item by item with."""
    model_info(settings.engine, settings.model, settings.limits)  # an unknown engine or model
    local = settings.local
    if settings.engine == "dashscope":
        if settings.dashscope_api_key is None:
            raise ConfigError(
                FailureCode.PROVIDER_AUTH,
                "the DashScope engine needs an API key: set DASHSCOPE_API_KEY",
            )
        if local.task != "transcribe":
            raise ConfigError(
                FailureCode.UNSUPPORTED_OPTION,
                "--task translate needs the local engine (--engine local)",
            )
        return
    from pipeline.asr.local import unsupported_translate
    from pipeline.asr.weights import english_only, resolve_model

    if local.task == "translate" and english_only(settings.model):
        raise unsupported_translate(settings.model)
    resolve_model(
        settings.model, cache_dir=local.download_root, allow_download=local.allow_download
    )
    _check_device(local.device, local.compute_type)


def _check_device(device: str, compute_type: str) -> None:
    """A device or compute type CTranslate2 cannot use here fails now, not at the first load."""
    import ctranslate2

    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError(
            FailureCode.CONFIG_INVALID, f"unknown device {device!r}: use cpu, cuda or auto"
        )
    gpus = ctranslate2.get_cuda_device_count() if device != "cpu" else 0
    if device == "cuda" and gpus == 0:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            "--device cuda: no CUDA device is visible here; use --device cpu",
        )
    target = "cuda" if gpus else "cpu"
    supported = ctranslate2.get_supported_compute_types(target)
    if compute_type not in {"default", "auto", *supported}:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"compute type {compute_type!r} does not run on {target} here: use one of "
            f"{', '.join(sorted(supported))}",
        )


def provider_factory(
    settings: Settings, http: httpx.Client, limiter: RateLimiter | None = None
) -> Callable[[], ThrottledClient] | None:
    """A (rate-limited) DashScope client when a key is configured or the engine needs one."""
    if settings.dashscope_api_key is None:
        if settings.engine == "dashscope":
            raise ConfigError(
                FailureCode.PROVIDER_AUTH,
                "the DashScope engine needs an API key: set DASHSCOPE_API_KEY",
            )
        return None
    from pipeline.asr.dashscope import DashScopeClient

    client = ThrottledClient(
        DashScopeClient.from_settings(settings, http),
        limiter or TokenBucket(settings.provider.requests_per_s),
    )
    return lambda: client


def media_store(settings: Settings, fallback: Path) -> ObjectStore:
    """Configured storage, or a local directory for single-machine runs."""
    if settings.storage_url:
        return open_store(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    return LocalStore(fallback)


class StoreReader:
    """Reads ``s3://bucket/key`` and ``oss://bucket/key`` sources with our credentials."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def download(self, url: str, dest: Path, *, max_bytes: int) -> int:
        scheme, bucket, key = split_url(url)
        store = open_store(f"{scheme}://{bucket}", endpoint_url=self.settings.s3_endpoint_url)
        store.get_file(key, dest, max_bytes=max_bytes)
        return dest.stat().st_size


def publisher_for(
    settings: Settings, store: ObjectStore, provider: Callable[[], Provider] | None
) -> Publisher | None:
    if provider is None:
        return None
    if isinstance(store, LocalStore):
        # No bucket of ours the provider could read: use DashScope's temporary storage.
        return TemporaryUploadPublisher(provider)
    return PresignPublisher(PRESIGN_S)


def build_context(
    settings: Settings,
    *,
    ledger: Ledger,
    owner: str,
    sinks: Callable[[str], OutputSink],
    scratch: Path,
    store: ObjectStore,
    http: httpx.Client,
    dead_letters: bool,
    options: dict[str, Any] | None = None,
    limiter: RateLimiter | None = None,
    gate: SubmitGate | None = None,
    lease_s: float = 3600.0,
    handoff_s: float = 0.0,
    **overrides: Any,
) -> FlowContext:
    provider = provider_factory(settings, http, limiter)
    downloads = download_client(settings)  # holds no idle connections: nothing to close
    rules = StepRules(
        engine=settings.engine,
        model=settings.model,
        language=settings.language,
        formats=settings.formats,
        retry=settings.retry,
        poll=settings.poll,
        limits=settings.limits,
        download=settings.download,
        options=options or {},
        dead_letters=dead_letters,
        lease_s=lease_s,
        handoff_s=handoff_s,
    )
    return FlowContext(
        ledger=ledger,
        owner=owner,
        rules=rules,
        media=MediaKeeper(store),
        sinks=sinks,
        scratch=scratch,
        http=lambda: downloads,
        clip_engine=ClipEngines(settings, provider),
        provider=provider,
        publisher=publisher_for(settings, store, provider),
        objects=StoreReader(settings),
        gate=gate or LocalGate(settings.provider.max_inflight_tasks, ledger.inflight_tasks),
        **overrides,
    )
