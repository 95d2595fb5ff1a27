"""The embedded driver: a whole manifest through the stages with threads in one process.

The ledger under ``--out`` decides what is left to do, so a second run of the same manifest
only does what the first did not finish. One run per output directory at a time (a lock
file says so); anything a killed run left claimed is released when the next one starts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.asr.catalog import Mode
from pipeline.asr.dashscope.params import is_funasr
from pipeline.batches import key_of, seeds_for
from pipeline.budget import Caps
from pipeline.errors import TRANSIENT_CODES, PipelineError
from pipeline.flow.actions import Action
from pipeline.flow.admission import admit_batch
from pipeline.flow.context import FlowContext
from pipeline.flow.plan import count_states, plan_jobs
from pipeline.flow.provider import poll_step, reconcile_submitting, submit_step
from pipeline.flow.steps import prepare_step, transcribe_step
from pipeline.ledger import ItemRow, ItemSeed, utcnow
from pipeline.ledger.budgets import get_budget, is_parked, set_caps
from pipeline.log import get_logger
from pipeline.manifest import Manifest
from pipeline.render import write_outputs
from pipeline.results import ItemResult, result_of, write_results
from pipeline.settings import RetrySettings
from pipeline.states import CLAIMED_FROM, ItemState
from pipeline.transcript import from_result_document

log = get_logger("bulkscribe.run")

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
    budget: Caps = field(default_factory=Caps)  # no caps unless given (pipeline/budget.py)
    currency: str | None = None


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
        # SKIPPED (a budget cap reached) is what was asked for, not a failure.
        return not self.interrupted and all(r.status in ("SUCCEEDED", "SKIPPED")
                                            for r in self.results)


class Progress:
    """What the runner tells a progress display; the CLI supplies rich or plain ones."""

    def start(self, total: int, done: int, todo: int) -> None: ...
    def item_done(self, key: str, state: str, detail: str, audio_s: float) -> None: ...
    def stop(self) -> None: ...


def batch_id_for(out_dir: Path) -> str:
    """Embedded runs are one batch per output directory."""
    digest = hashlib.sha1(str(out_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return f"run-{digest[:12]}"


@dataclass
class EmbeddedRunner:
    """Drives one batch to the end with a thread pool; the ledger says what is left."""

    cfg: RunConfig
    ctx: FlowContext
    progress: Progress = field(default_factory=Progress)
    check_engine: Callable[[], Any] | None = None
    batch_size: int = 10
    io_workers: int = 8  # provider requests in flight at once

    def __post_init__(self) -> None:
        self.batch_id = batch_id_for(self.cfg.out_dir)
        self.ledger = self.ctx.ledger
        self._budgeted = False

    # -- the run ------------------------------------------------------------------------
    def run(self, manifest: Manifest) -> RunSummary:
        started = time.monotonic()
        cfg = self.cfg
        self.ledger.ensure_batch(self.batch_id, kind="run", out=str(cfg.out_dir),
                                 engine=cfg.engine, model=cfg.model, manifest=manifest.path,
                                 options={"language": cfg.language, "formats": list(cfg.formats)})
        # An id keeps the source it was first transcribed from, whatever sorts first now.
        manifest = manifest.prefer({r.key: r.source for r in self.ledger.list_items(self.batch_id)
                                    if not r.key.startswith("@")})
        self.ledger.sync_items(self.batch_id, seeds_for(manifest.entries, engine=cfg.engine,
                                                         model=cfg.model, language=cfg.language),
                               engine=cfg.engine,
                               model=cfg.model, force=cfg.force)
        self._recover()
        self._apply_budget()
        rows = {r.key: r for r in self.ledger.list_items(self.batch_id)}
        keys = [key_of(e) for e in manifest.entries]
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
            audio_s = self._drive(todo)
        except KeyboardInterrupt:
            self.ctx.stop.set()
        finally:
            self.progress.stop()
            self._release_own_claims()
        results = self.results(manifest)
        if not self.ctx.stop.is_set():
            write_results(cfg.out_dir, results)
        return RunSummary(results, len(todo), time.monotonic() - started,
                          interrupted=self.ctx.stop.is_set(), audio_s=audio_s)

    def _drive(self, todo: Sequence[ItemRow]) -> float:
        """Keep both pools busy until every item is finished.

        Two pools, as the distributed queues: ``cpu`` (``workers`` threads) runs ffmpeg and the
        model; ``io`` runs provider requests (submit, poll, persist), which mostly wait on the
        network and must not queue behind a long transcription.
        """
        view = {r.id: r for r in todo}
        inflight: dict[Future[object], tuple[str, tuple[str, ...]]] = {}
        capacity = {"cpu": self.cfg.workers, "io": self.io_workers}
        audio_s = 0.0
        with ThreadPoolExecutor(capacity["cpu"], thread_name_prefix="cpu") as cpu, \
                ThreadPoolExecutor(capacity["io"], thread_name_prefix="io") as io:
            pools = {"cpu": cpu, "io": io}
            try:
                while view or inflight:
                    busy = {i for _, ids in inflight.values() for i in ids}
                    used = {"cpu": 0, "io": 0}
                    for kind, _ in inflight.values():
                        used[kind] += 1
                    for kind, fn, ids in self._plan(view, busy):
                        if self.ctx.stop.is_set():
                            break
                        if used[kind] < capacity[kind]:
                            inflight[pools[kind].submit(fn)] = (kind, ids)
                            used[kind] += 1
                    if not inflight:
                        self.ctx.stop.wait(self._idle_s(view))
                        continue
                    done, _ = wait(inflight, timeout=self._idle_s(view),
                                   return_when=FIRST_COMPLETED)
                    for fut in done:
                        _, ids = inflight.pop(fut)
                        fut.result()  # steps handle their own failures; anything else is a bug
                        audio_s = self._refresh(view, ids, audio_s)
                    audio_s = self._refresh_admitted(view, audio_s)
            except KeyboardInterrupt:
                self.ctx.stop.set()
                for fut in inflight:
                    fut.cancel()
                raise
        return audio_s

    def _refresh(self, view: dict[str, ItemRow], ids: Sequence[str], audio_s: float) -> float:
        """Re-read items a step touched; report the ones that finished."""
        for item_id in ids:
            row = self.ledger.get(item_id)
            if row is None or row.state.terminal:
                view.pop(item_id, None)
                if row is not None:
                    audio_s += (row.audio_duration_ms or 0) / 1000
                    self.progress.item_done(row.key, row.state.value, row.error_code or "",
                                            audio_s)
            else:
                view[item_id] = row
        return audio_s

    def _apply_budget(self) -> None:
        """This run's caps on the batch: a higher cap re-admits SKIPPED items; no cap
        releases everything. ``--force`` starts the running totals again."""
        if self.cfg.force:
            set_caps(self.ledger, self.batch_id, Caps())
        set_caps(self.ledger, self.batch_id, self.cfg.budget, currency=self.cfg.currency)
        self._budgeted = self.cfg.budget.active
        if self._budgeted:
            admit_batch(self.ctx, self.batch_id)

    def _refresh_admitted(self, view: dict[str, ItemRow], audio_s: float) -> float:
        """Admission moves items no step of ours touched: re-read those waiting for it
        (parked), and once a cap is reached the unprepared ones it skipped."""
        if not self._budgeted:
            return audio_s
        budget = get_budget(self.ledger, self.batch_id)
        closing = budget is not None and budget.tally.skip_from is not None
        stale = [i for i, r in view.items() if is_parked(r.next_run_at)
                 or (closing and r.state is ItemState.PENDING)]
        return self._refresh(view, stale, audio_s) if stale else audio_s

    def _plan(self, view: dict[str, ItemRow],
              busy: set[str]) -> list[tuple[str, Callable[[], object], tuple[str, ...]]]:
        """Due work from the shared planner, as (pool, call, item ids)."""
        ctx = self.ctx
        rows = list(view.values())
        jobs = plan_jobs(
            rows, self._mode_of, utcnow(), busy=busy,
            # Backpressure: never hold more normalized audio than the workers can use.
            # Items parked for budget admission do not count: they wait for an earlier one,
            # which must still find room to be prepared.
            prepare_room=2 * self.cfg.workers - count_states(
                [r for r in rows if not is_parked(r.next_run_at)], ItemState.PREPARED),
            submit_room=len(rows), batch_size=lambda m: self.batch_size if is_funasr(m) else 1,
            default_model=self.cfg.model)
        calls: list[tuple[str, Callable[[], object], tuple[str, ...]]] = []
        for job in jobs:
            if job.action is None:
                calls.append(("io", partial(reconcile_submitting, ctx, job.rows[0]), job.ids))
            elif job.action is Action.POLL:
                calls.append(("io", partial(poll_step, ctx, str(job.task_id)), job.ids))
            elif job.action is Action.SUBMIT:
                calls.append(("io", partial(submit_step, ctx, list(job.rows)), job.ids))
            elif job.action is Action.TRANSCRIBE:
                calls.append(("cpu", partial(transcribe_step, ctx, job.rows[0]), job.ids))
            else:
                calls.append(("cpu", partial(prepare_step, ctx, job.rows[0]), job.ids))
        return calls

    def _mode_of(self, row: ItemRow) -> Mode:
        try:
            return self.ctx.info(row).mode
        except PipelineError as exc:  # an item naming a model that does not exist
            self.ledger.fail(row.id, row.state, exc.code, exc.message)
            return Mode.CLIP

    def _idle_s(self, view: dict[str, ItemRow]) -> float:
        """How long to wait for a step to finish before looking for due work again."""
        dues = [r.next_run_at for r in view.values() if r.next_run_at is not None]
        if not dues:
            return 1.0
        return max(0.05, min(1.0, (min(dues) - utcnow()).total_seconds()))

    # -- housekeeping -------------------------------------------------------------------
    def _recover(self) -> None:
        """Undo what a killed or interrupted run left: claims, vanished scratch files."""
        for row in self.ledger.list_items(self.batch_id):
            state = row.state
            if state is ItemState.SUBMITTING:
                reconcile_submitting(self.ctx, row)
                continue
            if state.claimed:
                self.ledger.move(row.id, state, CLAIMED_FROM[state])
                state = CLAIMED_FROM[state]
                log.info("item.released", item_id=row.key, was=row.state.value)
            if state is ItemState.PREPARED and not self._media_present(row):
                self.ledger.move(row.id, state, ItemState.PENDING, media_key=None)
            if state is ItemState.FAILED and (
                self.cfg.retry_failed or row.error_code in TRANSIENT_CODES
            ) and not row.key.startswith("@"):
                self.ledger.sync_items(self.batch_id, [_reseed(row)], engine=self.cfg.engine,
                                       model=self.cfg.model, force=True)

    def _media_present(self, row: ItemRow) -> bool:
        try:
            return bool(row.media_key) and self.ctx.media.store.exists(str(row.media_key))
        except PipelineError:
            return False

    def _release_own_claims(self) -> None:
        for row in self.ledger.list_items(self.batch_id):
            if row.state.claimed and row.lease_owner == self.ctx.owner:
                target = CLAIMED_FROM[row.state]
                if row.state is ItemState.SUBMITTING:
                    continue  # a submit may be on the wire: the next run reconciles it
                self.ledger.move(row.id, row.state, target, owner=self.ctx.owner)

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
        return [result_of(e, rows.get(key_of(e))) for e in manifest.entries]


def _reseed(row: ItemRow) -> ItemSeed:
    return ItemSeed(row.key, row.line_no, row.source, row.spec, row.fingerprint, row.source_stamp)
