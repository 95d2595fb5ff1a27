"""One Job in, the step that carries it out called: the embedded runner's whole table.

The distributed driver sends the same jobs as messages (workers/dispatch.py) whose tasks
call the same steps after loading their rows by id.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.flow.actions import Action
from pipeline.flow.context import FlowContext
from pipeline.flow.plan import Job
from pipeline.flow.provider import poll_step, reconcile_submitting, submit_step
from pipeline.flow.steps import prepare_step, transcribe_step

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
