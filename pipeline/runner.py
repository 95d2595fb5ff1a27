"""The embedded driver: a whole manifest through the stages with threads in one process.

The ledger under ``--out`` decides what is left to do, so a second run of the same manifest
only does what the first did not finish. One run per output directory at a time (a lock
file says so); anything a killed run left claimed is released when the next one starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structlog.contextvars import bound_contextvars

from pipeline.asr.base import ClipEngine
from pipeline.errors import (
    TRANSIENT_CODES,
    FailureCode,
    PipelineError,
    TransientError,
    failure_of,
)
from pipeline.ledger import ItemRow, ItemSeed, Ledger
from pipeline.log import get_logger
from pipeline.manifest import Manifest, display
from pipeline.models import AsrOptions, ManifestItem, ManifestProblem, NormalizedAudio, ProbeResult
from pipeline.render import write_outputs
from pipeline.retry import backoff_s
from pipeline.settings import RetrySettings
from pipeline.sources import source_stamp
from pipeline.stages.persist import build_document
from pipeline.stages.prepare import PrepareContext, SourceSpec, prepare
from pipeline.stages.transcribe import transcribe_file
from pipeline.states import CLAIMED_FROM, ItemState
from pipeline.transcript import from_result_document

log = get_logger("bulkscribe.run")

LEASE_S = 24 * 3600.0  # embedded claims are released by the next run, not by time


@dataclass(frozen=True, slots=True)
class RunConfig:
    out_dir: Path
    engine: str
    model: str
    language: str | None
    formats: tuple[str, ...]
    workers: int
    retry: RetrySettings
    force: bool = False
    retry_failed: bool = False
    scratch_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One line of results.jsonl."""

    id: str | None
    source: str | None
    status: str
    error: dict[str, str] | None
    outputs: dict[str, str]
    audio_duration_ms: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "status": self.status, "error": self.error,
                "outputs": self.outputs, "audio_duration_ms": self.audio_duration_ms}


@dataclass(slots=True)
class RunSummary:
    results: list[ItemResult]
    processed: int  # items worked on in this run
    elapsed_s: float
    interrupted: bool = False
    audio_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status == "SUCCEEDED" for r in self.results)


class Progress:
    """What the runner tells a progress display; the CLI supplies rich or plain ones."""

    def start(self, total: int, done: int, todo: int) -> None: ...
    def item_done(self, key: str, state: str, detail: str, audio_s: float) -> None: ...
    def stop(self) -> None: ...


def batch_id_for(out_dir: Path) -> str:
    """Embedded runs are one batch per output directory."""
    digest = hashlib.sha1(str(out_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return f"run-{digest[:12]}"


def fingerprint(item: ManifestItem, engine: str, model: str, language: str | None) -> str:
    spec = item.spec() | {"engine": engine, "model": item.model or model,
                          "language": item.language or language}
    blob = json.dumps(spec, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()


def seeds_for(manifest: Manifest, cfg: RunConfig) -> list[ItemSeed]:
    seeds = []
    for entry in manifest.entries:
        if isinstance(entry, ManifestProblem):
            # '@' cannot start a manifest id, so these keys never collide with real ones.
            seeds.append(ItemSeed(
                key=f"@line{entry.line_no}", line_no=entry.line_no,
                source=_storable(entry.source or ""),
                spec={"id": entry.item_id}, fingerprint=f"problem:{entry.code}:{entry.message}",
                failure=(entry.code, entry.message)))
            continue
        spec = entry.spec() | {"source": _storable(entry.source)}
        seeds.append(ItemSeed(
            key=entry.item_id, line_no=entry.line_no, source=_storable(entry.source), spec=spec,
            fingerprint=fingerprint(entry, cfg.engine, cfg.model, cfg.language),
            source_stamp=source_stamp(entry.source)))
    return seeds


def _storable(source: str) -> str:
    """Non-UTF-8 file names (surrogate escapes) become file:// URLs so they survive the DB."""
    try:
        source.encode("utf-8")
        return source
    except UnicodeEncodeError:
        from urllib.parse import quote

        return "file://" + quote(os.fsencode(os.path.abspath(source)))


@dataclass
class EmbeddedRunner:
    cfg: RunConfig
    ledger: Ledger
    engine: ClipEngine
    prepare_ctx: PrepareContext
    progress: Progress = field(default_factory=Progress)
    check_engine: Callable[[], Any] | None = None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.batch_id = batch_id_for(self.cfg.out_dir)
        self.owner = f"run:{os.getpid()}:{threading.get_ident()}"
        self._stop = threading.Event()
        self._scratch: Path | None = None

    # -- the run ------------------------------------------------------------------------
    def run(self, manifest: Manifest) -> RunSummary:
        started = time.monotonic()
        cfg = self.cfg
        self.ledger.ensure_batch(self.batch_id, kind="run", out=str(cfg.out_dir),
                                 engine=cfg.engine, model=cfg.model, manifest=manifest.path,
                                 options={"language": cfg.language, "formats": list(cfg.formats)})
        self.ledger.sync_items(self.batch_id, seeds_for(manifest, cfg), engine=cfg.engine,
                               model=cfg.model, force=cfg.force)
        self._recover()
        rows = {r.key: r for r in self.ledger.list_items(self.batch_id)}
        keys = [_key(e) for e in manifest.entries]
        for key in keys:
            row = rows[key]
            if row.state is ItemState.SUCCEEDED and not self._outputs_complete(row):
                rows[key] = self._rerender(row)
        todo = [rows[k] for k in keys if not rows[k].state.terminal]
        if todo and self.check_engine is not None:
            self.check_engine()  # a missing model is a usage error, not 2,000 failed items
        self.progress.start(len(keys), len(keys) - len(todo), len(todo))
        audio_s = 0.0
        try:
            audio_s = self._work(todo)
        except KeyboardInterrupt:
            self._stop.set()
        finally:
            self.progress.stop()
            self._release_own_claims()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
        results = self.results(manifest)
        if not self._stop.is_set():
            write_results(cfg.out_dir, results)
        return RunSummary(results, len(todo), time.monotonic() - started,
                          interrupted=self._stop.is_set(), audio_s=audio_s)

    def _work(self, todo: Sequence[ItemRow]) -> float:
        if not todo:
            return 0.0
        self._scratch = Path(tempfile.mkdtemp(prefix=f"bulkscribe-{os.getpid()}-",
                                              dir=self.cfg.scratch_dir))
        audio_s = 0.0
        pending = list(reversed(todo))
        with ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="item") as pool:
            running: set[Future[ItemRow]] = set()
            try:
                while pending or running:
                    while pending and len(running) < self.cfg.workers and not self._stop.is_set():
                        running.add(pool.submit(self._process, pending.pop()))
                    if not running:
                        break
                    done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        row = fut.result()
                        if row.state.terminal:
                            audio_s += (row.audio_duration_ms or 0) / 1000
                            self.progress.item_done(row.key, row.state.value,
                                                    row.error_code or "", audio_s)
            except KeyboardInterrupt:
                self._stop.set()
                for fut in running:
                    fut.cancel()
                raise
        return audio_s

    # -- one item -----------------------------------------------------------------------
    def _process(self, row: ItemRow) -> ItemRow:
        with bound_contextvars(batch_id=self.batch_id, item_id=row.key, attempt=row.attempt):
            workdir = self._scratch / row.id if self._scratch else Path(tempfile.mkdtemp())
            try:
                return self._with_retries(row, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def _with_retries(self, row: ItemRow, workdir: Path) -> ItemRow:
        tries = row.tries
        while True:
            current = self.ledger.get(row.id) or row
            try:
                self._stages(current, workdir)
                return self.ledger.get(row.id) or row
            except Exception as exc:
                latest = self.ledger.get(row.id) or row
                if self._stop.is_set():
                    return latest  # interrupted: the claim is released, not failed
                code, message = failure_of(exc)
                if latest.state.claimed:
                    self.ledger.move(row.id, latest.state, CLAIMED_FROM[latest.state],
                                     owner=self.owner)
                    latest = self.ledger.get(row.id) or latest
                if isinstance(exc, TransientError) and tries + 1 < self.cfg.retry.max_attempts:
                    delay = backoff_s(tries, self.cfg.retry, retry_after_s=exc.retry_after_s)
                    tries += 1
                    self.ledger.set_fields(row.id, tries=tries)
                    log.warning("item.retry", code=str(code), error=message, tries=tries,
                                delay_s=round(delay, 2))
                    if self._stop.wait(delay):
                        return latest
                    continue
                if not isinstance(exc, PipelineError):
                    log.exception("item.crashed", error=message)
                detail = getattr(exc, "detail", None)
                self.ledger.fail(row.id, latest.state, code, message, detail=detail)
                log.info("item.failed", code=str(code), error=message)
                return self.ledger.get(row.id) or latest

    def _stages(self, row: ItemRow, workdir: Path) -> None:
        spec = row.spec
        if row.state is ItemState.PENDING:
            with bound_contextvars(stage="prepare"):
                claimed = self._claim(row, ItemState.PENDING, ItemState.PREPARING)
                t0 = time.monotonic()
                prepared = prepare(SourceSpec(_source_of(row), spec.get("start_s"),
                                              spec.get("end_s"), spec.get("channel")),
                                   workdir, self.prepare_ctx)
                self.ledger.record_timing(row.id, "prepare", time.monotonic() - t0)
                self._move(claimed, ItemState.PREPARED, media_key=str(prepared.audio.path),
                           probe=prepared.probe.as_dict() | {"offset_s": prepared.audio.offset_s,
                                                             "normalized_s": prepared.audio.duration_s},
                           audio_duration_ms=int(round(prepared.audio.duration_s * 1000)))
                log.info("prepare.done", duration_s=round(prepared.probe.duration_s, 3),
                         codec=prepared.probe.codec, seconds=round(time.monotonic() - t0, 3))
            row = self.ledger.get(row.id) or row
        if row.state is ItemState.PREPARED:
            with bound_contextvars(stage="transcribe"):
                claimed = self._claim(row, ItemState.PREPARED, ItemState.TRANSCRIBING)
                probe_facts = dict(claimed.probe or {})
                audio = NormalizedAudio(Path(claimed.media_key or ""),
                                        probe_facts.get("normalized_s", 0.0),
                                        offset_s=probe_facts.get("offset_s", 0.0))
                options = AsrOptions(language=spec.get("language") or self.cfg.language)
                t0 = time.monotonic()
                transcript = transcribe_file(audio, self.engine, options,
                                             channel_id=spec.get("channel") or 0)
                self.ledger.record_timing(row.id, "transcribe", time.monotonic() - t0)
                probe = ProbeResult.from_dict(probe_facts)
                document = build_document(display(spec.get("source") or row.source), probe,
                                          [transcript])
                outputs = write_outputs(self.cfg.out_dir, row.key, document, [transcript],
                                        self.cfg.formats)
                self._move(claimed, ItemState.SUCCEEDED, outputs=outputs, error_code=None,
                           error_message=None)
                self.ledger.end_attempt(row.id, ItemState.SUCCEEDED)
                log.info("transcribe.done", seconds=round(time.monotonic() - t0, 3),
                         sentences=len(transcript.sentences))

    def _claim(self, row: ItemRow, old: ItemState, new: ItemState) -> ItemRow:
        claimed = self.ledger.claim(row.id, old, new, owner=self.owner, lease_s=LEASE_S)
        if claimed is None:
            raise PipelineError(FailureCode.INTERNAL, f"item {row.key} was claimed elsewhere")
        return claimed

    def _move(self, row: ItemRow, new: ItemState, **values: Any) -> None:
        if not self.ledger.move(row.id, row.state, new, owner=self.owner, **values):
            raise PipelineError(FailureCode.INTERNAL, f"item {row.key} changed under us")

    # -- housekeeping -------------------------------------------------------------------
    def _recover(self) -> None:
        """Undo what a killed or interrupted run left: claims, vanished scratch files."""
        for row in self.ledger.list_items(self.batch_id):
            state = row.state
            if state.claimed:
                self.ledger.move(row.id, state, CLAIMED_FROM[state])
                state = CLAIMED_FROM[state]
                log.info("item.released", item_id=row.key, was=row.state.value)
            if state is ItemState.PREPARED and not Path(row.media_key or "").is_file():
                self.ledger.move(row.id, state, ItemState.PENDING, media_key=None)
            if state is ItemState.FAILED and (
                self.cfg.retry_failed or row.error_code in TRANSIENT_CODES
            ) and not row.key.startswith("@"):
                self.ledger.sync_items(self.batch_id, [_reseed(row)], engine=self.cfg.engine,
                                       model=self.cfg.model, force=True)

    def _release_own_claims(self) -> None:
        for row in self.ledger.list_items(self.batch_id):
            if row.state.claimed and row.lease_owner == self.owner:
                self.ledger.move(row.id, row.state, CLAIMED_FROM[row.state], owner=self.owner)

    def _outputs_complete(self, row: ItemRow) -> bool:
        outputs = row.outputs or {}
        return all(f in outputs and (self.cfg.out_dir / outputs[f]).is_file()
                   for f in self.cfg.formats)

    def _rerender(self, row: ItemRow) -> ItemRow:
        """Formats added on a re-run come from the saved JSON, not a new transcription."""
        doc_path = self.cfg.out_dir / f"{row.key}.json"
        try:
            document = json.loads(doc_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.ledger.sync_items(self.batch_id, [_reseed(row)], engine=self.cfg.engine,
                                   model=self.cfg.model, force=True)
            return self.ledger.get(row.id) or row
        parsed = from_result_document(document)
        formats = tuple(dict.fromkeys([*self.cfg.formats, *(row.outputs or {})]))
        outputs = write_outputs(self.cfg.out_dir, row.key, document, parsed.transcripts, formats)
        self.ledger.set_fields(row.id, outputs=outputs)
        return self.ledger.get(row.id) or row

    def results(self, manifest: Manifest) -> list[ItemResult]:
        rows = {r.key: r for r in self.ledger.list_items(self.batch_id)}
        return [result_of(e, rows.get(_key(e))) for e in manifest.entries]


def _key(entry: ManifestItem | ManifestProblem) -> str:
    return f"@line{entry.line_no}" if isinstance(entry, ManifestProblem) else entry.item_id


def _source_of(row: ItemRow) -> str:
    return str(row.spec.get("source") or row.source)


def _reseed(row: ItemRow) -> ItemSeed:
    return ItemSeed(row.key, row.line_no, row.source, row.spec, row.fingerprint, row.source_stamp)


def result_of(entry: ManifestItem | ManifestProblem, row: ItemRow | None) -> ItemResult:
    if isinstance(entry, ManifestProblem):
        src = display(entry.source) if entry.source else None
        return ItemResult(entry.item_id, src, "FAILED",
                          {"code": entry.code, "message": entry.message}, {}, None)
    source = display(entry.source)
    if row is None or not row.state.terminal:
        return ItemResult(entry.item_id, source, "PENDING", None, {}, None)
    if row.state is ItemState.SUCCEEDED:
        return ItemResult(entry.item_id, source, "SUCCEEDED", None, dict(row.outputs or {}),
                          row.audio_duration_ms)
    error = {"code": row.error_code or FailureCode.INTERNAL.value,
             "message": row.error_message or ""}
    return ItemResult(entry.item_id, source, "FAILED", error, {}, row.audio_duration_ms)


def write_results(out_dir: Path, results: Sequence[ItemResult]) -> Path:
    path = out_dir / "results.jsonl"
    tmp = path.with_name(f".results.jsonl.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.as_json(), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
