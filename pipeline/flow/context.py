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
from pipeline.asr.catalog import ModelInfo
from pipeline.errors import FailureCode, PermanentError
from pipeline.flow.actions import Action, redispatch_slack
from pipeline.flow.client import Provider
from pipeline.flow.limits import SubmitGate
from pipeline.flow.media import MediaKeeper, Publisher
from pipeline.flow.outputs import OutputSink
from pipeline.flow.rules import StepRules
from pipeline.inputs.sources import ObjectReader
from pipeline.ledger import ItemRow, Ledger, utcnow
from pipeline.models import NormalizedAudio, ProbeResult
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe


@dataclass(frozen=True)
class FlowContext:
    """The services a step uses (ledger, stores, clients, engines, observers) and the
    :class:`StepRules` it follows."""

    ledger: Ledger
    owner: str  # lease owner: this process/thread
    rules: StepRules
    media: MediaKeeper
    sinks: Callable[[str], OutputSink]  # batch id -> where its results go
    scratch: Path
    http: Callable[[], httpx.Client]  # downloads: pipeline.inputs.netguard.guarded_client
    clip_engine: Callable[[ModelInfo], ClipEngine]
    provider: Callable[[], Provider] | None = None  # the (throttled) DashScope client
    publisher: Publisher | None = None
    objects: ObjectReader | None = None  # reads s3:// and oss:// sources
    gate: SubmitGate | None = None  # caps provider tasks in flight (None: no cap)
    # Distributed: whether the worker finishing a step queues ``next_step`` itself
    # (SchedulePolicy.hands_off); see StepRules.handoff_s.
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
            redispatch_slack(next_step, self.rules.handoff_s)
            if self.handed_off(row, next_step, delay_s)
            else 0.0
        )
        return (now or utcnow()) + timedelta(seconds=delay_s + slack)

    def handed_off(self, row: ItemRow, next_step: Action, delay_s: float) -> bool:
        return self.rules.handoff_s > 0 and self.hands_off(row, next_step, delay_s)

    def client(self) -> Provider:
        """The provider's client; a permanent failure when none is configured."""
        if self.provider is None:
            raise PermanentError(
                FailureCode.PROVIDER_AUTH, "DashScope is not configured: set DASHSCOPE_API_KEY"
            )
        return self.provider()

    def workdir(self, row: ItemRow) -> Path:
        return self.scratch / row.id
