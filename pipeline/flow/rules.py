"""The frozen values that steer the steps: the run's defaults (engine, model, language,
formats, options) and its timings (retry, poll, lease, hand-off slack). No services: those
are :class:`pipeline.flow.context.FlowContext`'s."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.asr.catalog import ModelInfo
from pipeline.flow.policy import item_model
from pipeline.ledger import ItemRow
from pipeline.models import AsrOptions, MediaLimits
from pipeline.settings import DownloadSettings, LimitsSettings, PollSettings, RetrySettings

# Manifest/option keys that map onto AsrOptions fields; anything else is passed through.
_OPTION_FIELDS = {
    "enable_itn": "itn",
    "itn": "itn",
    "vocabulary_id": "vocabulary_id",
    "diarization_enabled": "diarization",
    "diarization": "diarization",
    "speaker_count": "speaker_count",
    "context": "context",
    "enable_words": "words",
    "hotwords": "hotwords",
}
_SPEC_FIELDS = ("context", "hotwords")


@dataclass(frozen=True, slots=True)
class StepRules:
    engine: str  # local | dashscope
    model: str  # the run's default model (items may name their own)
    language: str | None
    formats: tuple[str, ...]
    retry: RetrySettings
    poll: PollSettings
    limits: LimitsSettings
    download: DownloadSettings = field(default_factory=DownloadSettings)
    options: Mapping[str, Any] = field(default_factory=dict)  # run-wide provider options
    dead_letters: bool = False  # distributed: retries exhausted -> DEAD, else FAILED
    lease_s: float = 3600.0
    # Distributed: when a worker queues an item's next step itself right after this one
    # (FlowContext.hands_off), the step's ledger mark carries ``handoff_s`` of slack, so the
    # sweeper sends that step again only if the message is lost. Embedded runs plan every
    # step from the ledger: no slack.
    handoff_s: float = 0.0

    def info(self, row: ItemRow) -> ModelInfo:
        return item_model(row, self.engine, self.model, self.limits)

    def media_limits(self, row: ItemRow) -> MediaLimits:
        return self.info(row).limits

    def asr_options(self, row: ItemRow) -> AsrOptions:
        request = row.request
        merged = {**self.options, **request.options}
        # Manifest fields that may sit beside ``options`` in an item's spec.
        merged.update(request.extra_fields())
        fields: dict[str, Any] = {"language": request.language or self.language}
        extra = []
        for key, value in sorted(merged.items()):
            name = _OPTION_FIELDS.get(key)
            if name is None:
                extra.append((key, value))
            else:
                fields[name] = _coerce(name, value)
        return AsrOptions(**fields, extra=tuple(extra))


def _coerce(name: str, value: Any) -> Any:
    if name in ("itn", "diarization", "words"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if name == "speaker_count":
        return int(value)
    return str(value)
