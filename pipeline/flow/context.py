"""Everything a step needs, built once per process and handed down frozen."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from pipeline.asr.base import ClipEngine
from pipeline.asr.catalog import ModelInfo, model_info
from pipeline.flow.actions import Action, redispatch_slack
from pipeline.flow.limits import SubmitGate
from pipeline.flow.media import MediaKeeper, Publisher
from pipeline.flow.outputs import OutputSink
from pipeline.ledger import ItemRow, Ledger, utcnow
from pipeline.models import AsrOptions, MediaLimits, NormalizedAudio, ProbeResult
from pipeline.settings import DownloadSettings, LimitsSettings, PollSettings, RetrySettings
from pipeline.sources import ObjectReader
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe

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


@dataclass(frozen=True)
class FlowContext:
    ledger: Ledger
    owner: str  # lease owner: this process/thread
    engine: str  # local | dashscope
    model: str  # the run's default model (items may name their own)
    language: str | None
    formats: tuple[str, ...]
    retry: RetrySettings
    poll: PollSettings
    limits: LimitsSettings
    media: MediaKeeper
    sinks: Callable[[str], OutputSink]  # batch id -> where its results go
    scratch: Path
    http: Callable[[], httpx.Client]  # downloads: pipeline.netguard.guarded_client
    clip_engine: Callable[[ModelInfo], ClipEngine]
    provider: Callable[[], Any] | None = None  # DashScopeClient factory
    publisher: Publisher | None = None
    objects: ObjectReader | None = None  # reads s3:// and oss:// sources
    download: DownloadSettings = field(default_factory=DownloadSettings)
    dead_letters: bool = False  # distributed: retries exhausted -> DEAD, else FAILED
    options: Mapping[str, Any] = field(default_factory=dict)  # run-wide provider options
    lease_s: float = 3600.0
    gate: SubmitGate | None = None  # caps provider tasks in flight (None: no cap)
    # Distributed: when a worker queues an item's next step itself right after this one
    # (``hands_off(row, next_step, delay_s)``), the step's ledger mark carries ``handoff_s``
    # of slack, so the sweeper sends that step again only if the message is lost. Embedded
    # runs plan every step from the ledger: no slack.
    handoff_s: float = 0.0
    hands_off: Callable[[ItemRow, Action, float], bool] = lambda _row, _next, _delay_s: False
    prober: Callable[..., ProbeResult] = probe
    normalizer: Callable[..., NormalizedAudio] = normalize
    stop: threading.Event = field(default_factory=threading.Event)
    # Observer of what happens to items ("stage.done", "item.retry", "item.failed", ...);
    # the worker turns these into Prometheus metrics.
    events: Callable[[str, Mapping[str, Any]], None] = lambda _name, _fields: None
    # Called with the batch id each time an item of it finishes (SUCCEEDED, FAILED, DEAD):
    # the distributed driver writes the batch's results.jsonl if that was its last item.
    item_finished: Callable[[str], None] = lambda _batch_id: None

    def emit(self, name: str, **fields: Any) -> None:
        with contextlib.suppress(Exception):  # observability must never fail a step
            self.events(name, fields)

    def due_at(
        self, row: ItemRow, next_step: Action, delay_s: float, now: datetime | None = None
    ) -> datetime:
        """The ``next_run_at`` for ``next_step``, due ``delay_s`` after the current step."""
        slack = (
            redispatch_slack(next_step, self.handoff_s)
            if self.handed_off(row, next_step, delay_s)
            else 0.0
        )
        return (now or utcnow()) + timedelta(seconds=delay_s + slack)

    def handed_off(self, row: ItemRow, next_step: Action, delay_s: float) -> bool:
        return self.handoff_s > 0 and self.hands_off(row, next_step, delay_s)

    def info(self, row: ItemRow) -> ModelInfo:
        engine = row.request.engine_or(self.engine)
        return model_info(engine, row.model_or(self.model), self.limits)

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

    def workdir(self, row: ItemRow) -> Path:
        return self.scratch / row.id


def _coerce(name: str, value: Any) -> Any:
    if name in ("itn", "diarization", "words"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if name == "speaker_count":
        return int(value)
    return str(value)
