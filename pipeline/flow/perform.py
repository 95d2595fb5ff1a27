"""One Job in, the step that carries it out called: the embedded runner's whole table.

The distributed driver sends the same jobs as messages (workers/dispatch.py) whose tasks
call the same steps after loading their rows by id.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.flow.actions import Action
from pipeline.flow.context import FlowContext
from pipeline.flow.plan import Job
from pipeline.stages.poll import poll_step
from pipeline.stages.prepare import prepare_step
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.stages.submit import submit_step
from pipeline.stages.transcribe import transcribe_step

STEPS: dict[Action, Callable[[FlowContext, Job], object]] = {
    Action.PREPARE: lambda ctx, job: prepare_step(ctx, job.rows[0]),
    Action.TRANSCRIBE: lambda ctx, job: transcribe_step(ctx, job.rows[0]),
    Action.SUBMIT: lambda ctx, job: submit_step(ctx, list(job.rows)),
    Action.POLL: lambda ctx, job: poll_step(ctx, str(job.task_id)),
    Action.RECONCILE: lambda ctx, job: reconcile_submitting(ctx, job.rows[0]),
}


def perform(ctx: FlowContext, job: Job) -> object:
    """Run ``job``'s step in this thread; steps record their own failures in the ledger."""
    return STEPS[job.action](ctx, job)
