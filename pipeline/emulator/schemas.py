"""Task answers and result documents, as the service shapes them (protocol §3.3, §3.6).

Pure builders: a :class:`TaskView` (what the store knows at one instant) in, JSON-ready dicts
out. Fun-ASR documents come from :func:`pipeline.outputs.transcript.build_document`, the same
schema the pipeline writes; the qwen3-asr-flash-filetrans schema differs (``audio_info``,
``sentence_id`` from 0, ``language``/``emotion`` per sentence, ``words`` on request).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pipeline.emulator.backend import Problem
from pipeline.emulator.catalog import Family
from pipeline.emulator.errors import INTERNAL_MESSAGE
from pipeline.emulator.faults import Fate
from pipeline.emulator.tasks import FileFailed, FileOk, FileOutcome, JobOptions, Status, TaskSpec
from pipeline.models import ProbeResult
from pipeline.outputs.transcript import Sentence, Transcript, build_document

DOWNLOAD_FAILED = ("InvalidFile.DownloadFailed", "The audio file cannot be downloaded.")
# Only DownloadFailed is confirmed verbatim (§10.5); the rest are the notes' best guesses.
SUBTASK_ERRORS: dict[Problem, tuple[str, str]] = {
    Problem.DOWNLOAD: DOWNLOAD_FAILED,
    Problem.DECODE: ("InvalidFile.DecodeFailed", "The audio file cannot be decoded."),
    Problem.TOO_LONG: ("InvalidFile.AudioLengthError", "The audio file is too long."),
    Problem.TOO_LARGE: ("InvalidFile.FileTooLarge", "The audio file is too large."),
    Problem.BAD_CHANNEL: ("InvalidParameter", "The channel_id does not exist in the audio file."),
    Problem.ENGINE: ("InternalError", INTERNAL_MESSAGE),
}


def fmt_time(t: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in local time, like the service's task times."""
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True, slots=True)
class TaskView:
    spec: TaskSpec
    status: Status
    started_at: float | None
    ended_at: float | None  # end, or cancellation, once it happened
    outcomes: tuple[FileOutcome, ...]
    expires_at: float


def task_output(
    view: TaskView, result_url: Callable[[int], str]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``output`` and ``usage`` of a task query (or submit) answer."""
    spec = view.spec
    out: dict[str, Any] = {"task_id": spec.task_id, "task_status": view.status.value}
    if view.status is Status.UNKNOWN:
        return out, None
    out["submit_time"] = fmt_time(spec.submitted_at)
    if view.started_at is not None:
        out["scheduled_time"] = fmt_time(view.started_at)
    if view.status not in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED):
        return out, None
    assert view.ended_at is not None
    out["end_time"] = fmt_time(view.ended_at)
    if view.status is Status.CANCELED:
        return out, None
    outcomes = view.outcomes
    if spec.fate is Fate.FAIL:
        outcomes = tuple(FileFailed(u, "InternalError", INTERNAL_MESSAGE) for u in spec.file_urls)
    failures = [o for o in outcomes if isinstance(o, FileFailed)]
    if view.status is Status.FAILED and failures:
        out["code"], out["message"] = failures[0].code, failures[0].message
    seconds = math.ceil(sum(o.duration_s for o in outcomes if isinstance(o, FileOk)))
    if spec.family is Family.FILETRANS:
        if view.status is Status.SUCCEEDED:
            out["result"] = {"transcription_url": result_url(0)}
            return out, {"seconds": seconds}
        return out, None
    out["results"] = [_subtask(i, o, result_url) for i, o in enumerate(outcomes)]
    ok = sum(isinstance(o, FileOk) for o in outcomes)
    out["task_metrics"] = {"TOTAL": len(outcomes), "SUCCEEDED": ok, "FAILED": len(outcomes) - ok}
    return out, ({"duration": seconds} if ok else None)


def _subtask(i: int, o: FileOutcome, result_url: Callable[[int], str]) -> dict[str, Any]:
    if isinstance(o, FileOk):
        return {
            "file_url": o.file_url,
            "transcription_url": result_url(i),
            "subtask_status": "SUCCEEDED",
        }
    return {
        "file_url": o.file_url,
        "code": o.code,
        "message": o.message,
        "subtask_status": "FAILED",
    }


def list_entry(view: TaskView) -> dict[str, Any]:
    """One row of ``GET /api/v1/tasks``."""
    out, _ = task_output(view, lambda _i: "")
    row: dict[str, Any] = {
        k: out[k]
        for k in ("task_id", "task_status", "submit_time", "scheduled_time", "end_time")
        if k in out
    }
    return {**row, "model_name": view.spec.model}


def funasr_document(
    file_url: str, probe: ProbeResult, transcripts: tuple[Transcript, ...], options: JobOptions
) -> dict[str, Any]:
    """The Fun-ASR/Paraformer result file; ``speaker_id`` only with diarization."""
    if options.diarization:
        # No diarization model behind the emulator: everyone is speaker 0 (documented).
        transcripts = tuple(
            replace(t, sentences=tuple(replace(s, speaker_id=0) for s in t.sentences))
            for t in transcripts
        )
    return build_document(file_url, probe, transcripts)


def filetrans_document(
    file_url: str, probe: ProbeResult, transcripts: tuple[Transcript, ...], options: JobOptions
) -> dict[str, Any]:
    """The qwen3-asr-flash-filetrans result file (§3.6)."""
    return {
        "file_url": file_url,
        "audio_info": {"format": probe.container, "sample_rate": probe.sample_rate},
        "transcripts": [
            {
                "channel_id": t.channel_id,
                "text": t.text,
                "sentences": [
                    _filetrans_sentence(
                        i, s, t.language or options.language or "en", options.enable_words
                    )
                    for i, s in enumerate(t.sentences)
                ],
            }
            for t in transcripts
        ],
    }


def _filetrans_sentence(i: int, s: Sentence, language: str, words: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sentence_id": i,
        "begin_time": s.begin_ms,
        "end_time": s.end_ms,
        "text": s.text,
        "language": language,
        "emotion": "neutral",
    }
    if words:
        out["words"] = [
            {
                "begin_time": w.begin_ms,
                "end_time": w.end_ms,
                "text": w.text,
                "punctuation": w.punctuation,
            }
            for w in s.words
        ]
    return out
