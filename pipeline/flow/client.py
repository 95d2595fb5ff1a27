"""The provider as the flow sees it: exactly the calls the steps make, so mypy checks them.

:class:`pipeline.asr.dashscope.DashScopeClient` is the one implementation (its wire details
stay in asr/dashscope); :class:`pipeline.flow.limits.ThrottledClient` wraps it with the same
methods; tests pass fakes with these five.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pipeline.asr.dashscope.tasks import Submitted, TaskStatus, TaskSummary


class Provider(Protocol):
    def submit_transcription(
        self,
        model: str,
        file_urls: Sequence[str],
        parameters: Mapping[str, Any],
        *,
        oss_resolve: bool = False,
    ) -> Submitted:
        """Start one task for ``file_urls`` (one file, or a Fun-ASR batch)."""
        ...

    def query_task(self, task_id: str) -> TaskStatus: ...

    def list_tasks(
        self, *, model: str | None = None, page_size: int = 100, max_pages: int = 50
    ) -> list[TaskSummary]:
        """The account's recent tasks: how a lost submission is found again."""
        ...

    def fetch_result(self, url: str) -> dict[str, Any]: ...

    def upload_temporary(
        self, path_or_bytes: bytes | str | os.PathLike[str], filename: str, model: str
    ) -> str:
        """Put a local file where ``model`` can read it (``oss://`` URL)."""
        ...
