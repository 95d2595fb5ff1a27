"""The async task API's values (§3): what a submit and a query return, parsed strictly.

``parse_*`` are pure: a decoded 200 body in, a frozen value out, or
:func:`~pipeline.asr.dashscope.wire.bad_response` when a field the pipeline relies on is
missing. Fun-ASR's ``output.results[]`` and filetrans' single ``output.result`` are both
normalised to ``TaskStatus.results``; ``UNKNOWN`` (expired or foreign task id) is a status
like any other, for the poll decision to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from pipeline.asr.dashscope.wire import bad_response

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELED = "CANCELED"
UNKNOWN = "UNKNOWN"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, UNKNOWN})


@dataclass(frozen=True, slots=True)
class Submitted:
    task_id: str
    request_id: str | None
    status: str


@dataclass(frozen=True, slots=True)
class FileResult:
    """One file's outcome; ``file_url`` is "" when the service did not echo it (filetrans)."""

    file_url: str
    status: str  # subtask_status: SUCCEEDED | FAILED
    transcription_url: str | None = None
    code: str | None = None
    message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED and bool(self.transcription_url)


@dataclass(frozen=True, slots=True)
class TaskStatus:
    task_id: str
    status: str  # PENDING | RUNNING | SUSPENDED | SUCCEEDED | FAILED | CANCELED | UNKNOWN
    results: tuple[FileResult, ...] = ()
    code: str | None = None
    message: str | None = None
    request_id: str | None = None
    usage: Mapping[str, Any] | None = None
    # Seconds from submit_time to scheduled_time (when it started running): both the
    # provider's own clock, so no skew with ours. None until it runs, or if unreadable.
    queued_s: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One row of the task list (E9): enough to find a task we lost track of."""

    task_id: str
    status: str
    model: str | None = None
    submit_time: str | None = None


def parse_task_list(body: Mapping[str, Any]) -> tuple[list[TaskSummary], int]:
    """E9's flat body: ``tasks`` (2.0 SDK) or ``data`` (some docs), plus ``total``."""
    raw = body.get("tasks")
    if raw is None:
        raw = body.get("data") or []
    if not isinstance(raw, list):
        raise bad_response("task list is not a list", request_id=body.get("request_id"))
    tasks = [
        TaskSummary(
            str(t["task_id"]),
            str(t.get("task_status") or ""),
            t.get("model_name"),
            t.get("submit_time"),
        )
        for t in raw
        if isinstance(t, Mapping) and t.get("task_id")
    ]
    return tasks, int(body.get("total") or len(tasks))


def parse_submitted(body: Mapping[str, Any]) -> Submitted:
    """E1's answer: ``output.task_id`` and ``output.task_status`` are both required."""
    request_id = body.get("request_id")
    output = _output(body)
    task_id, status = output.get("task_id"), output.get("task_status")
    if not task_id or not isinstance(task_id, str):
        raise bad_response("submit answer has no output.task_id", request_id=request_id)
    if not status or not isinstance(status, str):
        raise bad_response("submit answer has no output.task_status", request_id=request_id)
    return Submitted(task_id, request_id, status)


def parse_task_status(body: Mapping[str, Any], task_id: str) -> TaskStatus:
    """E2's answer. ``task_id`` (the one asked about) fills in if the body omits it."""
    request_id = body.get("request_id")
    output = _output(body)
    status = output.get("task_status")
    if not status or not isinstance(status, str):
        raise bad_response("task answer has no output.task_status", request_id=request_id)
    results = _results(output, request_id)
    if status == SUCCEEDED and not results:
        raise bad_response("SUCCEEDED task without results", request_id=request_id)
    usage = body.get("usage")
    return TaskStatus(
        task_id=str(output.get("task_id") or task_id),
        status=status,
        results=results,
        code=output.get("code") or body.get("code") or None,
        message=output.get("message") or body.get("message") or None,
        request_id=request_id,
        usage=MappingProxyType(dict(usage)) if isinstance(usage, Mapping) else None,
        queued_s=_queued_s(output.get("submit_time"), output.get("scheduled_time")),
    )


TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # the task times' form, "2025-09-25 01:37:36.509"


def _queued_s(submitted: Any, scheduled: Any) -> float | None:
    """How long the task waited in the provider's queue before it ran; None unless both
    times are there and read as such (a time we cannot read only costs the poll pacing)."""
    if not isinstance(submitted, str) or not isinstance(scheduled, str):
        return None
    try:
        seconds = (
            datetime.strptime(scheduled, TIME_FORMAT) - datetime.strptime(submitted, TIME_FORMAT)
        ).total_seconds()
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _output(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``output``, else the body itself (the SDK's rule for task GETs, §2.4)."""
    output = body.get("output")
    if output is None:
        return body
    if not isinstance(output, Mapping):
        raise bad_response("'output' is not an object", request_id=body.get("request_id"))
    return output


def _results(output: Mapping[str, Any], request_id: str | None) -> tuple[FileResult, ...]:
    single = output.get("result")
    if isinstance(single, Mapping):  # qwen3-asr-flash-filetrans
        url = single.get("transcription_url")
        if not url:
            raise bad_response("output.result has no transcription_url", request_id=request_id)
        return (FileResult(str(single.get("file_url") or ""), SUCCEEDED, str(url)),)
    raw = output.get("results") or []
    if not isinstance(raw, list):
        raise bad_response("output.results is not a list", request_id=request_id)
    results = []
    for r in raw:
        if not isinstance(r, Mapping) or not r.get("subtask_status"):
            raise bad_response(f"result without subtask_status: {r!r:.120}", request_id=request_id)
        status, url = str(r["subtask_status"]), r.get("transcription_url")
        if status == SUCCEEDED and not url:
            raise bad_response("SUCCEEDED subtask without transcription_url", request_id=request_id)
        results.append(
            FileResult(
                str(r.get("file_url") or ""),
                status,
                str(url) if url else None,
                r.get("code"),
                r.get("message"),
            )
        )
    return tuple(results)
