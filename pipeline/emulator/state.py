"""One emulator instance: settings, clock, task store, uploads and the transcription backend.

Everything here runs on the event loop thread (no locks): handlers call :meth:`Emulator.tick`
before they read, the lifespan ticker calls :meth:`Emulator.housekeeping` twenty times a
second, and finished transcriptions call ``tick`` when they complete. Blocking work only
ever happens in the backend's thread pools.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Callable

from pipeline.emulator.backend import AudioFailure, AudioRequest, Backend
from pipeline.emulator.catalog import Family
from pipeline.emulator.config import EmulatorConfig
from pipeline.emulator.errors import INTERNAL_MESSAGE
from pipeline.emulator.faults import RequestFault, request_fault, task_fate
from pipeline.emulator.parse import SubmitRequest
from pipeline.emulator.schemas import (
    SUBTASK_ERRORS,
    TaskView,
    filetrans_document,
    fmt_time,
    funasr_document,
)
from pipeline.emulator.tasks import (
    FileFailed,
    FileOk,
    FileOutcome,
    Status,
    TaskRecord,
    TaskSpec,
    TaskStore,
    end_time,
    expires_at,
    status_at,
)
from pipeline.emulator.uploads import UploadStore
from pipeline.log import get_logger

log = get_logger("bulkscribe.emulator")

SWEEP_EVERY_S = 5.0


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig,
        backend: Backend,
        uploads: UploadStore,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.backend = backend
        self.uploads = uploads
        self.clock = clock
        self.store = TaskStore(config.max_concurrency)
        self.secret = secrets.token_bytes(32)  # signs upload policies and result URLs
        self._requests = 0
        self._task_seq = 0
        self._work: set[asyncio.Task[None]] = set()
        self._last_sweep = clock()

    # --- faults --------------------------------------------------------------------------

    def next_request_fault(self) -> RequestFault:
        """Count one API request and draw its fault; nothing else has happened yet."""
        n = self._requests
        self._requests += 1
        return request_fault(self.config, n)

    # --- tasks ---------------------------------------------------------------------------

    def submit(self, req: SubmitRequest) -> TaskSpec:
        seq = self._task_seq
        self._task_seq += 1
        spec = TaskSpec(
            task_id=str(uuid.uuid4()),
            seq=seq,
            model=req.model,
            family=req.family,
            file_urls=req.file_urls,
            options=req.options,
            submitted_at=self.clock(),
            latency_s=self.config.latency_s,
            fate=task_fate(self.config, seq),
        )
        self.store.add(spec)
        log.info(
            "emulator.task.submitted",
            task_id=spec.task_id,
            model=spec.model,
            files=len(spec.file_urls),
            fate=spec.fate.value,
        )
        self.tick()
        return spec

    def tick(self) -> float:
        """Bring the store up to now and start the work of newly admitted tasks."""
        now = self.clock()
        for spec in self.store.advance(now):
            job = asyncio.get_running_loop().create_task(self._transcribe_task(spec))
            self._work.add(job)
            job.add_done_callback(self._work.discard)
        return now

    def housekeeping(self) -> None:
        """From the ticker, never a request: tick, and now and then forget expired tasks (O(n))."""
        now = self.tick()
        if now - self._last_sweep >= SWEEP_EVERY_S or now < self._last_sweep:
            self._last_sweep = now
            self.store.sweep(now, self.config.task_ttl_s)

    def view(self, task_id: str) -> TaskView | None:
        """What a query for ``task_id`` sees now; None if the id is not (or no longer) here."""
        now = self.tick()
        rec = self.store.get(task_id)
        return None if rec is None else self._view(rec, now)

    def views(self) -> list[TaskView]:
        now = self.tick()
        return [self._view(rec, now) for rec in self.store.records()]

    def _view(self, rec: TaskRecord, now: float) -> TaskView:
        spec, tl = rec.spec, rec.timeline
        status = status_at(rec, now, self.config.task_ttl_s)
        ended = tl.canceled_at if tl.canceled_at is not None else end_time(spec, tl)
        return TaskView(
            spec,
            status,
            tl.started_at,
            ended,
            rec.outcomes,
            expires_at(spec, tl, self.config.task_ttl_s),
        )

    def result_file(self, task_id: str, index: int) -> tuple[int, bytes | None]:
        """(HTTP status, document) for a result URL: 403 once the task expired, 404 if never."""
        view = self.view(task_id)
        if view is None or view.status is Status.UNKNOWN:
            return (403 if self.store.was_received(task_id) else 404), None
        if view.status is not Status.SUCCEEDED or not 0 <= index < len(view.outcomes):
            return 404, None
        outcome = view.outcomes[index]
        return (200, outcome.document) if isinstance(outcome, FileOk) else (404, None)

    def listing(self) -> list[dict[str, object]]:
        """Every task received since the last reset, for ``GET /_emulator/tasks``."""
        now = self.tick()
        rows: list[dict[str, object]] = []
        for spec in self.store.received():
            rec = self.store.get(spec.task_id)
            status = Status.UNKNOWN if rec is None else status_at(rec, now, self.config.task_ttl_s)
            rows.append(
                {
                    "task_id": spec.task_id,
                    "model": spec.model,
                    "file_urls": list(spec.file_urls),
                    "status": status.value,
                    "submitted_at": fmt_time(spec.submitted_at),
                    "fate": spec.fate.value,
                }
            )
        return rows

    def reset(self) -> None:
        """Forget every task and restart the fault sequences (uploads and cache stay)."""
        self.store.clear()
        self._requests = 0
        self._task_seq = 0

    def stats(self) -> dict[str, object]:
        now = self.tick()
        counts: dict[str, int] = {}
        for rec in self.store.records():
            s = status_at(rec, now, self.config.task_ttl_s).value
            counts[s] = counts.get(s, 0) + 1
        return {
            "requests": self._requests,
            "tasks": self._task_seq,
            "statuses": counts,
            "running_slots": self.store.running_count,
            "uploads": len(self.uploads),
            "transcriptions": self.backend.cache.transcriptions,
            "cache_hits": self.backend.cache.hits,
        }

    # --- work ----------------------------------------------------------------------------

    async def _transcribe_task(self, spec: TaskSpec) -> None:
        outcomes = await asyncio.gather(*(self._transcribe_file(spec, u) for u in spec.file_urls))
        self.store.work_done(spec.task_id, tuple(outcomes), self.clock())
        log.info(
            "emulator.task.transcribed",
            task_id=spec.task_id,
            ok=sum(isinstance(o, FileOk) for o in outcomes),
        )
        self.tick()

    async def _transcribe_file(self, spec: TaskSpec, url: str) -> FileOutcome:
        opts = spec.options
        req = AudioRequest(url, channels=opts.channels, language=opts.language)
        try:
            done = await self.backend.run(req)
        except AudioFailure as exc:
            log.info(
                "emulator.file.failed",
                task_id=spec.task_id,
                problem=exc.problem.value,
                detail=exc.detail,
            )
            return FileFailed(url, *SUBTASK_ERRORS[exc.problem])
        except Exception as exc:  # a bug or a missing tool: the subtask fails, the server lives
            log.exception("emulator.file.crashed", task_id=spec.task_id, error=repr(exc))
            return FileFailed(url, "InternalError", INTERNAL_MESSAGE)
        build = funasr_document if spec.family is Family.FILE_URLS else filetrans_document
        doc = build(url, done.probe, done.transcripts, opts)
        return FileOk(
            url,
            json.dumps(doc, ensure_ascii=False).encode(),
            done.probe.duration_s * len(opts.channels),
        )

    async def close(self) -> None:
        for job in list(self._work):
            job.cancel()
        self.backend.close()
