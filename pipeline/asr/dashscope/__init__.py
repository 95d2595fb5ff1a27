"""Alibaba Cloud DashScope speech models over httpx: async file tasks, sync clips, upload.

``client`` sends requests and maps failures once (``wire.to_error``); ``params``, ``tasks``,
``sync`` and ``upload`` are the pure request/answer halves; ``polling`` decides what a task
query means; ``engine`` turns the sync models into a ClipEngine.
"""

from pipeline.asr.dashscope.client import DashScopeClient, compat_base_from
from pipeline.asr.dashscope.engine import (
    DashScopeClipEngine,
    split_sentences,
    transcript_from_text,
    transcripts_from_result,
)
from pipeline.asr.dashscope.params import (
    filetrans_parameters,
    funasr_parameters,
    submit_parameters,
)
from pipeline.asr.dashscope.polling import (
    Done,
    Failed,
    PollDecision,
    PollLimits,
    Wait,
    decide,
    file_outcomes,
)
from pipeline.asr.dashscope.sync import SyncResult
from pipeline.asr.dashscope.tasks import FileResult, Submitted, TaskStatus
from pipeline.asr.dashscope.wire import DEFAULT_TIMEOUT, new_http_client, to_error

__all__ = [
    "DEFAULT_TIMEOUT",
    "DashScopeClient",
    "DashScopeClipEngine",
    "Done",
    "Failed",
    "FileResult",
    "PollDecision",
    "PollLimits",
    "Submitted",
    "SyncResult",
    "TaskStatus",
    "Wait",
    "compat_base_from",
    "decide",
    "file_outcomes",
    "filetrans_parameters",
    "funasr_parameters",
    "new_http_client",
    "split_sentences",
    "submit_parameters",
    "to_error",
    "transcript_from_text",
    "transcripts_from_result",
]
