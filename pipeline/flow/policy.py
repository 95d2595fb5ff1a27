"""The scheduling policy: every rule about what runs next, in one place, for both drivers.

:class:`SchedulePolicy` is a frozen value (the run's engine and model, the provider's batch
size, the hand-off horizon) whose methods are pure decisions over ledger rows: which engine
mode an item takes, how many files go in one provider task (from the model catalog's facts),
and which next steps a Celery worker queues itself instead of leaving them to the sweeper.
:class:`Scheduler` binds the policy to the ledger, for the one side effect planning has
(an item naming a model that does not exist fails at once) and hands both drivers their
jobs: the embedded runner its :class:`Agenda`, the Celery dispatcher and sweeper a plan.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.asr.catalog import Mode, ModelInfo, model_info
from pipeline.errors import ConfigError, PipelineError
from pipeline.flow.actions import Action, after_prepare, redispatch_slack
from pipeline.flow.plan import Agenda, Job, plan_jobs
from pipeline.ledger import Failure, ItemRow, Ledger
from pipeline.ledger.budgets import count_parked
from pipeline.settings import LimitsSettings, Settings
from pipeline.states import ItemState

# Longer waits belong to the sweeper, not to countdown messages: a worker holds its
# countdown messages in memory, and a killed one takes them along.
COUNTDOWN_MAX_S = 60.0

# Embedded backpressure: never hold more normalized audio than the workers can use.
PREPARED_PER_WORKER = 2


def item_model(
    row: ItemRow, engine: str, model: str, limits: LimitsSettings | None = None
) -> ModelInfo:
    """The catalog's facts for the model ``row`` names, or the run's default."""
    return model_info(row.request.engine_or(engine), row.model_or(model), limits)


def embedded_prepare_room(workers: int, prepared: int) -> int:
    """How many more items the embedded runner may prepare while ``prepared`` wait."""
    return PREPARED_PER_WORKER * workers - prepared


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    engine: str  # the run's default engine and model (items may name their own)
    model: str
    limits: LimitsSettings | None = None
    batch_size: int = 10  # provider.batch_size: files per task, for models that take several
    countdown_max_s: float = COUNTDOWN_MAX_S

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulePolicy:
        return cls(settings.engine, settings.model, settings.limits, settings.provider.batch_size)

    def info(self, row: ItemRow) -> ModelInfo:
        return item_model(row, self.engine, self.model, self.limits)

    def mode_of(self, row: ItemRow) -> Mode:
        """CLIP or ASYNC; raises ConfigError for an unknown engine or model."""
        return self.info(row).mode

    def batch_size_of(self, row: ItemRow) -> int:
        """Files one submission of ``row``'s model may carry: the configured batch size, up
        to what the model takes (one for all but Fun-ASR)."""
        try:
            return max(1, min(self.batch_size, self.info(row).max_files))
        except ConfigError:  # failed at planning already; it is never submitted
            return 1

    def left_to_sweeper(self, row: ItemRow) -> bool:
        """A prepared file of a batching model is submitted by the sweeper, which gathers
        up to ``batch_size`` of them into one task; nothing else waits for it."""
        return self.batch_size_of(row) > 1

    def hands_off(self, row: ItemRow, next_step: Action, delay_s: float) -> bool:
        """Whether the worker finishing a step of ``row`` queues ``next_step`` itself (so
        the step's ledger mark carries slack for that message, see FlowContext.due_at).

        Yes when it is due within ``countdown_max_s``, except a submission left to the
        sweeper.
        """
        if delay_s > self.countdown_max_s:
            return False
        return not (next_step is Action.SUBMIT and self.left_to_sweeper(row))

    def worker_sends(self, job: Job) -> bool:
        """Whether a worker queues ``job`` right after the step that made it due."""
        return not (job.action is Action.SUBMIT and self.left_to_sweeper(job.rows[0]))


def countdown_s(job: Job, now: datetime) -> float:
    """Seconds until the earliest of ``job``'s rows falls due (0: due already)."""
    due = min((r.next_run_at for r in job.rows if r.next_run_at), default=now)
    return max(0.0, (due - now).total_seconds())


@dataclass(frozen=True, slots=True)
class Scheduler:
    """The policy bound to the ledger: what both drivers ask for their jobs."""

    policy: SchedulePolicy
    ledger: Ledger

    def mode_of(self, row: ItemRow) -> Mode:
        try:
            return self.policy.mode_of(row)
        except PipelineError as exc:  # an item naming a model that does not exist
            self.ledger.fail(row.id, row.state, Failure.of(exc))
            return Mode.CLIP

    def after_prepare(self, row: ItemRow) -> Action:
        return after_prepare(self.mode_of(row))

    def agenda(self) -> Agenda:
        """An empty :class:`Agenda` for a run's rows (the embedded driver's planner)."""
        return Agenda(
            self.mode_of, batch_size=self.policy.batch_size_of, default_model=self.policy.model
        )

    def plan(
        self,
        rows: Iterable[ItemRow],
        now: datetime,
        *,
        prepare_room: int,
        submit_room: int,
        busy: Collection[str] = frozenset(),
    ) -> list[Job]:
        """The jobs due at ``now`` for ``rows`` (the sweeper's whole plan)."""
        return plan_jobs(
            rows,
            self.mode_of,
            now,
            busy=busy,
            prepare_room=prepare_room,
            submit_room=submit_room,
            batch_size=self.policy.batch_size_of,
            default_model=self.policy.model,
        )

    def sweep(
        self, rows: Iterable[ItemRow], now: datetime, *, max_prepared: int, max_inflight: int
    ) -> list[Job]:
        """The sweeper's plan for ``rows``: what is due, within the room left for normalized
        audio (``max_prepared`` items PREPARING or PREPARED; items parked for budget
        admission wait for an earlier one, which needs room) and for provider tasks in
        flight (``max_inflight``)."""
        prepared = self.ledger.count_states(ItemState.PREPARING, ItemState.PREPARED)
        return self.plan(
            rows,
            now,
            prepare_room=max_prepared - prepared + count_parked(self.ledger),
            submit_room=max_inflight - self.ledger.inflight_tasks(),
        )

    def refill(self, rows: Iterable[ItemRow], now: datetime, *, room: int) -> list[Job]:
        """Submissions for ``rows`` (PREPARED, waiting for room under the in-flight cap)
        now that ``room`` tasks' worth has come free: the longest waiting first, in groups
        as their model takes them."""
        jobs = self.plan(rows, now, prepare_room=0, submit_room=room)
        return [job for job in jobs if job.action is Action.SUBMIT]

    def mark_queued(
        self, rows: Sequence[ItemRow], *, countdown_s: float, redispatch_s: float, now: datetime
    ) -> None:
        """Rows whose step was just queued are not due again until its message should have
        run, plus slack for it to be taken (a poll's slack is the shorter: see
        :func:`redispatch_slack`), so the sweeper sends a step again only if it was lost."""
        polls = [r for r in rows if r.state is ItemState.SUBMITTED]
        others = [r for r in rows if r.state is not ItemState.SUBMITTED]
        for part, action in ((polls, Action.POLL), (others, None)):
            if part:
                slack = redispatch_slack(action, redispatch_s)
                self.ledger.mark_due(part, now + timedelta(seconds=countdown_s + slack))

    def follow_ups(self, fresh: Sequence[ItemRow], now: datetime) -> list[tuple[Job, float]]:
        """After a step: the jobs a worker queues at once for rows just read back, each with
        its countdown; what falls due later than the horizon, and Fun-ASR submissions, are
        the sweeper's."""
        rows = [r for r in fresh if not r.state.terminal]
        if not rows:
            return []
        soon = now + timedelta(seconds=self.policy.countdown_max_s)
        jobs = self.plan(rows, soon, prepare_room=len(rows), submit_room=len(rows))
        return [(job, countdown_s(job, now)) for job in jobs if self.policy.worker_sends(job)]
