"""Build the engine a run asks for, from settings. The one place engines are chosen."""

from __future__ import annotations

from pipeline.asr.base import ClipEngine
from pipeline.asr.catalog import Mode, ModelInfo
from pipeline.asr.local import LocalEngine
from pipeline.errors import ConfigError, FailureCode
from pipeline.settings import Settings


def build_clip_engine(settings: Settings, info: ModelInfo) -> ClipEngine:
    if info.mode is not Mode.CLIP:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"model {info.model} is transcribed as an async provider task, not in place",
        )
    if info.engine == "local":
        return LocalEngine(info.model, settings.local, concurrency=settings.workers)
    raise ConfigError(FailureCode.CONFIG_INVALID, f"engine {info.engine} is not available")
