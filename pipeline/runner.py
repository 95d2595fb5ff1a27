"""The embedded driver: a whole manifest through the stages with threads in one process.

The ledger under ``--out`` decides what is left to do, so a second run of the same manifest
only does what the first did not finish. One run per output directory at a time (a lock
file says so); anything a killed run left claimed is released when the next one starts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.flow.admission import admit_batch
from pipeline.flow.context import FlowContext
from pipeline.flow.outputs import transcript_name, write_item
from pipeline.flow.perform import perform
from pipeline.flow.plan import Agenda, Lane, lanes_on
from pipeline.flow.policy import SchedulePolicy, Scheduler, embedded_prepare_room
from pipeline.inputs.batches import batch_id_for, key_of, seeds_for
from pipeline.inputs.ids import is_problem_key
from pipeline.inputs.manifest import Manifest
from pipeline.ledger import ItemRow, ItemSeed, utcnow
from pipeline.ledger.budgets import get_budget, is_parked, set_caps
from pipeline.log import get_logger
from pipeline.models import ManifestProblem
from pipeline.outputs.results import ItemResult, result_of, write_results
from pipeline.outputs.transcript import from_result_document
from pipeline.planning.budget import Caps
from pipeline.settings import RetrySettings
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.states import CLAIMED_FROM, ItemState

log = get_logger("bulkscribe.run")

# Which pool runs which kind of job: as the distributed queues (provider; prepare, transcribe).
_POOL_LANES: dict[str, tuple[Lane, ...]] = {
    "io": lanes_on("provider"),
    "cpu": lanes_on("prepare", "transcribe"),
}
_Running = tuple[str, tuple[str, ...]]  # (pool, item ids) of a step in flight


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
    budget: Caps = field(default_factory=Caps)  # no caps unless given (pipeline/planning/budget.py)
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
        return not self.interrupted and all(
            r.status in ("SUCCEEDED", "SKIPPED") for r in self.results
        )


class Progress:
    """What the runner tells a progress display; the CLI supplies rich or plain ones.

    ``seconds`` is the item's own working time (its stages), when known.
    """

    def start(self, total: int, done: int, todo: int) -> None: ...
    def item_done(
        self, key: str, state: str, detail: str, audio_s: float, seconds: float | None = None
    ) -> None: ...
    def stop(self) -> None: ...


def own_seconds(row: ItemRow) -> float | None:
    """The sum of an item's stage timings in this attempt (None: none recorded)."""
    timings = dict(row.timings or {})
    return sum(float(v) for v in timings.values()) if timings else None


@dataclass
class EmbeddedRunner:
    """Drives one batch to the end with a thread pool; the ledger says what is left."""

    cfg: RunConfig
    ctx: FlowContext
    progress: Progress = field(default_factory=Progress)
    check_engine: Callable[[], Any] | None = None
    batch_size: int = 10
    io_workers: int = 8  # provider requests in flight at once
    # Called once a run ends with every item finished (results.jsonl written): closes the
    # batch and writes its batch.completed event (pipeline.notify).
    on_complete: Callable[[str, RunSummary], None] | None = None

    def __post_init__(self) -> None:
        self.batch_id = batch_id_for(self.cfg.out_dir)
        self.ledger = self.ctx.ledger
        self._budgeted = False
        ctx = self.ctx
        self.scheduler = Scheduler(
            SchedulePolicy(ctx.rules.engine, ctx.rules.model, ctx.rules.limits, self.batch_size),
            ctx.ledger,
        )

    # -- the run ------------------------------------------------------------------------
    def run(self, manifest: Manifest) -> RunSummary:
        started = time.monotonic()
        cfg = self.cfg
        self.ledger.ensure_batch(
            self.batch_id,
            kind="run",
            out=str(cfg.out_dir),
            engine=cfg.engine,
            model=cfg.model,
            manifest=manifest.path,
            options={"language": cfg.language, "formats": list(cfg.formats)},
        )
        # An id keeps the source it was first transcribed from, whatever sorts first now.
        manifest = manifest.prefer(
            {
                k: src
                for k, src in self.ledger.sources(self.batch_id).items()
                if not is_problem_key(k)
            }
        )
        self._release_claims()
        synced = self.ledger.sync_items(
            self.batch_id,
            seeds_for(
                manifest.entries,
                engine=cfg.engine,
                model=cfg.model,
                language=cfg.language,
                local_files=True,  # missing files fail here, all in one transaction
            ),
            engine=cfg.engine,
            model=cfg.model,
            force=cfg.force,
        )
        for key in synced.kept:  # a submission the provider may still be running
            log.info("item.not_restarted", batch_id=self.batch_id, item_id=key)
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
        # Invalid manifest lines are failures of this run (they are read again each time),
        # counted once, not items an earlier run finished.
        problems = [e for e in manifest.entries if isinstance(e, ManifestProblem)]
        # Items this run's intake failed (a missing file): no step runs for them.
        refused = [
            rows[k]
            for k in synced.refused
            if rows[k].state is ItemState.FAILED and not rows[k].is_problem
        ]
        now_failed = len(problems) + len(refused)
        self.progress.start(len(keys), len(keys) - len(todo) - now_failed, len(todo) + now_failed)
        for problem in problems:
            self.progress.item_done(
                problem.item_id or f"line {problem.line_no}", "FAILED", problem.code, 0.0
            )
        for row in refused:
            log.info(
                "item.failed",
                batch_id=row.batch_id,
                item_id=row.key,
                attempt=row.attempt,
                stage="intake",
                code=row.error_code,
                error=row.error_message,
            )
            self.ctx.emit("item.failed", code=str(row.error_code))
            self.progress.item_done(row.key, "FAILED", row.error_code or "", 0.0)
        audio_s = 0.0
        try:
            audio_s = self._drive(todo)
        except KeyboardInterrupt:
            self.ctx.stop.set()
        finally:
            self.progress.stop()
            self._release_own_claims()
        # Interrupted too: what finished says so, the rest is PENDING until the next run.
        results = self.results(manifest)
        write_results(cfg.out_dir, results)
        summary = RunSummary(
            results,
            len(todo),
            time.monotonic() - started,
            interrupted=self.ctx.stop.is_set(),
            audio_s=audio_s,
        )
        if (
            self.on_complete is not None
            and not summary.interrupted
            and all(r.status != "PENDING" for r in results)
        ):
            self.on_complete(self.batch_id, summary)
        return summary

    def _drive(self, todo: Sequence[ItemRow]) -> float:
        """Keep both pools busy until every item is finished.

        Two pools, as the distributed queues: ``cpu`` (``workers`` threads) runs ffmpeg and the
        model; ``io`` runs provider requests (submit, poll, persist), which mostly wait on the
        network and must not queue behind a long transcription. The shared planner's
        :class:`Agenda` holds the remaining rows; only those a finished step touched are
        filed again, so each step costs the same whatever the manifest's length.
        """
        agenda = self.scheduler.agenda()
        for row in todo:
            agenda.put(row)
        inflight: dict[Future[object], _Running] = {}
        capacity = {"cpu": self.cfg.workers, "io": self.io_workers}
        audio_s = 0.0
        with (
            ThreadPoolExecutor(capacity["cpu"], thread_name_prefix="cpu") as cpu,
            ThreadPoolExecutor(capacity["io"], thread_name_prefix="io") as io,
        ):
            pools = {"cpu": cpu, "io": io}
            try:
                while len(agenda) or inflight:
                    if not self.ctx.stop.is_set():
                        self._start_due(agenda, inflight, capacity, pools)
                    if not inflight:
                        if self.ctx.stop.is_set():
                            break
                        self.ctx.stop.wait(self._idle_s(agenda))
                        continue
                    done, _ = wait(
                        inflight, timeout=self._idle_s(agenda), return_when=FIRST_COMPLETED
                    )
                    touched: list[str] = []
                    for fut in done:
                        touched += inflight.pop(fut)[1]
                        fut.result()  # steps handle their own failures; anything else is a bug
                    audio_s = self._refresh(agenda, touched, audio_s)  # one read for all
                    audio_s = self._refresh_admitted(agenda, audio_s)
            except KeyboardInterrupt:
                self.ctx.stop.set()
                for fut in inflight:
                    fut.cancel()
                raise
        return audio_s

    def _start_due(
        self,
        agenda: Agenda,
        inflight: dict[Future[object], _Running],
        capacity: dict[str, int],
        pools: dict[str, ThreadPoolExecutor],
    ) -> None:
        """Fill each pool's free threads with the jobs due now, most advanced first."""
        used = {"cpu": 0, "io": 0}
        for kind, _ in inflight.values():
            used[kind] += 1
        now = utcnow()
        for kind, lanes in _POOL_LANES.items():
            room = capacity[kind] - used[kind]
            if room <= 0:
                continue
            prepare_room = embedded_prepare_room(self.cfg.workers, agenda.prepared)
            jobs = agenda.take(now, lanes=lanes, limit=room, prepare_room=prepare_room)
            for job in jobs:
                inflight[pools[kind].submit(perform, self.ctx, job)] = (kind, job.ids)

    def _refresh(self, agenda: Agenda, ids: Sequence[str], audio_s: float) -> float:
        """Re-read items a step touched; report the ones that finished."""
        rows = self.ledger.get_many(ids)
        for item_id in set(ids) - {r.id for r in rows}:
            agenda.forget(item_id)
        for row in rows:
            agenda.put(row)
            if row.state.terminal:
                audio_s += (row.audio_duration_ms or 0) / 1000
                # The row just read carries its timings (the item's own working time).
                self.progress.item_done(
                    row.key, row.state.value, row.error_code or "", audio_s, own_seconds(row)
                )
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

    def _refresh_admitted(self, agenda: Agenda, audio_s: float) -> float:
        """Admission moves items no step of ours touched: re-read those waiting for it
        (parked), and once a cap is reached the unprepared ones it skipped."""
        if not self._budgeted:
            return audio_s
        budget = get_budget(self.ledger, self.batch_id)
        closing = budget is not None and budget.tally.skip_from is not None
        stale = [
            r.id
            for r in agenda.rows()
            if is_parked(r.next_run_at) or (closing and r.state is ItemState.PENDING)
        ]
        return self._refresh(agenda, stale, audio_s) if stale else audio_s

    @staticmethod
    def _idle_s(agenda: Agenda) -> float:
        """How long to wait for a step to finish before looking for due work again."""
        due = agenda.next_due()
        if due is None:
            return 1.0
        return max(0.05, min(1.0, (due - utcnow()).total_seconds()))

    # -- housekeeping -------------------------------------------------------------------
    def _release_claims(self) -> None:
        """Claims a killed run left fall back to the state they were claimed from; a
        SUBMITTING one is first reconciled with the provider. This run holds the --out lock,
        so no claim in its ledger is live. Done before the manifest is synced: a new attempt
        (a changed line, --force) never starts from a claimed state."""
        for row in self.ledger.list_items(self.batch_id, states=CLAIMED_FROM):
            if row.state is ItemState.SUBMITTING:
                reconcile_submitting(self.ctx, row)
            elif self.ledger.move(row.id, row.state, CLAIMED_FROM[row.state]):
                log.info("item.released", item_id=row.key, was=row.state.value)

    def _recover(self) -> None:
        """Undo what a killed or interrupted run left: vanished scratch files, failures
        worth another attempt (its claims were released before the sync)."""
        # Only the rows acted on below are read: a long manifest's rows are many.
        for row in [
            *self.ledger.list_items(self.batch_id, states=[ItemState.PREPARED]),
            *self.ledger.failed_items(self.batch_id, retryable_only=not self.cfg.retry_failed),
        ]:
            state = row.state
            if state is ItemState.PREPARED and not self._media_present(row):
                self.ledger.move(row.id, state, ItemState.PENDING, media_key=None)
            if (
                state is ItemState.FAILED
                # Retryable as recorded: the exception's branch, stored with the failure.
                and (self.cfg.retry_failed or (row.failure is not None and row.failure.retryable))
                and not row.is_problem
            ):
                self.ledger.sync_items(
                    self.batch_id,
                    [_reseed(row)],
                    engine=self.cfg.engine,
                    model=self.cfg.model,
                    force=True,
                )

    def _media_present(self, row: ItemRow) -> bool:
        try:
            return bool(row.media_key) and self.ctx.media.store.exists(str(row.media_key))
        except PipelineError:
            return False

    def _release_own_claims(self) -> None:
        for row in self.ledger.list_items(self.batch_id, states=CLAIMED_FROM):
            if row.state.claimed and row.lease_owner == self.ctx.owner:
                target = CLAIMED_FROM[row.state]
                if row.state is ItemState.SUBMITTING:
                    continue  # a submit may be on the wire: the next run reconciles it
                self.ledger.move(row.id, row.state, target, owner=self.ctx.owner)

    def _outputs_complete(self, row: ItemRow) -> bool:
        outputs = row.outputs or {}
        return all(
            f in outputs and (self.cfg.out_dir / outputs[f]).is_file() for f in self.cfg.formats
        )

    def _rerender(self, row: ItemRow) -> ItemRow:
        """Formats added on a re-run come from the saved transcript, not a new transcription:
        the canonical one under .bulkscribe/transcripts/, or ``<id>.json`` from before it."""
        sink = self.ctx.sinks(self.batch_id)
        document = None
        for name in (transcript_name(row.key), f"{row.key}.json"):
            try:
                document = json.loads(sink.read_text(name) or "")
                break
            except ValueError:
                continue
        if not isinstance(document, dict):
            self.ledger.sync_items(
                self.batch_id,
                [_reseed(row)],
                engine=self.cfg.engine,
                model=self.cfg.model,
                force=True,
            )
            return self.ledger.get(row.id) or row
        parsed = from_result_document(document)
        formats = tuple(dict.fromkeys([*self.cfg.formats, *(row.outputs or {})]))
        outputs = write_item(sink, row.key, document, parsed.transcripts, formats)
        self.ledger.set_fields(row.id, outputs=outputs)
        log.info("item.rerendered", item_id=row.key, formats=list(formats))
        return self.ledger.get(row.id) or row

    def results(self, manifest: Manifest) -> list[ItemResult]:
        rows = {r.key: r for r in self.ledger.list_items(self.batch_id)}
        return [result_of(e, rows.get(key_of(e))) for e in manifest.entries]


def _reseed(row: ItemRow) -> ItemSeed:
    return ItemSeed(row.key, row.line_no, row.source, row.spec, row.fingerprint, row.source_stamp)
