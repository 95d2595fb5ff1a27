"""Batch status: counts by state, stage timings and failures, as data and as a table."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.inputs.ids import PROBLEM_PREFIX
from pipeline.states import TERMINAL, ItemState

if TYPE_CHECKING:
    from pipeline.ledger import Ledger

# Stage timings are summarised from the first this-many items (in manifest order) that have
# some: reading every item's timings of a million-item batch takes seconds.
TIMING_SAMPLE = 5000


@dataclass(frozen=True, slots=True)
class FailedItem:
    """One failed or dead item as status lists it."""

    key: str
    spec_id: str | None
    line_no: int
    state: str
    error_code: str | None
    error_message: str | None

    @property
    def item_id(self) -> str | None:
        """The id the manifest gave (a problem line's may be None)."""
        return self.spec_id if self.key.startswith(PROBLEM_PREFIX) else self.key


class StatusReads(Protocol):
    """What a status report reads: the ledger through SQLAlchemy (:class:`LedgerReads`),
    or PostgreSQL straight through psycopg (:mod:`pipeline.outputs.report_pg`, the CLI's path)."""

    def batch(self, batch_id: str) -> Mapping[str, Any] | None: ...
    def counts(self, batch_id: str) -> dict[str, int]: ...
    def models(self, batch_id: str) -> list[tuple[str, str, int]]: ...
    def timings(self, batch_id: str, limit: int | None) -> list[Mapping[str, float]]: ...
    def failures(self, batch_id: str, limit: int) -> list[FailedItem]: ...


class LedgerReads:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def batch(self, batch_id: str) -> Mapping[str, Any] | None:
        return self._ledger.batch(batch_id)

    def counts(self, batch_id: str) -> dict[str, int]:
        from pipeline.ledger.counts import batch_counts

        return dict(batch_counts(self._ledger.engine, batch_id).counts)

    def models(self, batch_id: str) -> list[tuple[str, str, int]]:
        from pipeline.ledger.counts import models_in_use

        return models_in_use(self._ledger.engine, batch_id)

    def timings(self, batch_id: str, limit: int | None) -> list[Mapping[str, float]]:
        return self._ledger.timings(batch_id, limit=limit)

    def failures(self, batch_id: str, limit: int) -> list[FailedItem]:
        rows = self._ledger.list_items(
            batch_id, states=[ItemState.FAILED, ItemState.DEAD], limit=limit
        )
        return [
            FailedItem(
                r.key,
                r.request.manifest_id,
                r.line_no,
                r.state.value,
                r.error_code,
                r.error_message,
            )
            for r in rows
        ]


def batch_status(
    ledger: Ledger,
    batch_id: str,
    *,
    failures: int = 20,
    timing_sample: int | None = TIMING_SAMPLE,
) -> dict[str, Any] | None:
    """``timing_sample``: stage timings from that many items only; None reads them all."""
    return status_report(
        LedgerReads(ledger), batch_id, failures=failures, timing_sample=timing_sample
    )


def status_report(
    reads: StatusReads,
    batch_id: str,
    *,
    failures: int = 20,
    timing_sample: int | None = TIMING_SAMPLE,
) -> dict[str, Any] | None:
    """The ``status --json`` object (and the console's): counts and models from the kept
    tables, a sample of stage timings, the first ``failures`` failures."""
    batch = reads.batch(batch_id)
    if batch is None:
        return None
    kept = batch.get("totals")  # rows collected by gc: their totals stay in the batch
    counts = dict(kept["counts"]) if kept else reads.counts(batch_id)
    total = sum(counts.values())
    per_stage: dict[str, list[float]] = {}
    for timing in reads.timings(batch_id, timing_sample):
        for stage, seconds in timing.items():
            per_stage.setdefault(stage, []).append(float(seconds))
    failed = reads.failures(batch_id, failures)
    in_use = reads.models(batch_id)
    # A batch still being entered by submit is not finished, whatever its first items say.
    phase = batch_phase(
        batch, batch.get("intake_at") is None and all(ItemState(s) in TERMINAL for s in counts)
    )
    return {
        "batch_id": batch_id,
        "out": batch["out"],
        # What the items are transcribed with now (a reprocess may have changed it); the
        # batch's own engine/model when it has no items.
        "engine": ", ".join(dict.fromkeys(e for e, _m, _n in in_use)) or batch["engine"],
        "model": ", ".join(dict.fromkeys(m for _e, m, _n in in_use)) or batch["model"],
        "models": [{"engine": e, "model": m, "items": n} for e, m, n in in_use],
        "total": total,
        "collected": bool(kept),  # gc deleted the item rows
        **({"audio_s": kept["audio_s"]} if kept else {}),
        "counts": counts,
        "state": phase,
        "done": phase == DONE,
        "entering": batch.get("intake_at") is not None,  # submit still entering items
        "stage_timings": {stage: _summary(values) for stage, values in sorted(per_stage.items())},
        "failures": [
            {
                "id": r.item_id,
                "line": r.line_no,
                "state": r.state,
                "code": r.error_code,
                "message": r.error_message,
            }
            for r in failed
        ],
    }


DONE = "done"
WRITING = "writing results"
RUNNING = "in progress"


def batch_phase(batch: Mapping[str, Any], finished: bool) -> str:
    """``done`` once results.jsonl is written: a distributed batch is done when the ledger
    says so (set by whoever wrote the file), not merely when its items are; an embedded run
    writes its file before it exits."""
    if not finished:
        return RUNNING
    if batch.get("kind") == "run" or batch.get("done_at") is not None:
        return DONE
    return WRITING


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "count": len(values),
        "mean_s": round(statistics.fmean(values), 3),
        "p50_s": round(statistics.median(values), 3),
        "p95_s": round(p95, 3),
        "total_s": round(sum(values), 3),
    }


def render_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    models = (
        ", ".join(
            f"{m['engine']}/{m['model']}" + (f" ×{m['items']}" if len(report["models"]) > 1 else "")
            for m in report["models"]
        )
        or f"{report['engine']}/{report['model']}"
    )
    state = report["state"]
    if report.get("entering"):
        state += ", items still being entered by submit"
    if report.get("collected"):
        state += f", item rows collected ({report['audio_s']:.0f} s of audio)"
    console.print(
        f"[bold]batch {report['batch_id']}[/] ({models}): {report['total']} item(s), {state}"
    )
    table = Table()
    table.add_column("state")
    table.add_column("items", justify="right")
    for name in ItemState:
        if report["counts"].get(name.value):
            table.add_row(name.value, str(report["counts"][name.value]))
    console.print(table)
    if report["stage_timings"]:
        t = Table(title="stage timings (s)", title_justify="left")
        for col in ("stage", "count", "mean", "p50", "p95", "total"):
            t.add_column(col, justify="right" if col != "stage" else "left")
        for stage, s in report["stage_timings"].items():
            t.add_row(
                stage,
                str(s["count"]),
                f"{s['mean_s']:.2f}",
                f"{s['p50_s']:.2f}",
                f"{s['p95_s']:.2f}",
                f"{s['total_s']:.1f}",
            )
        console.print(t)
    if report["failures"]:
        f = Table(title="failures", title_justify="left")
        for col in ("id", "line", "state", "code", "message"):
            f.add_column(col, overflow="fold")
        for r in report["failures"]:
            f.add_row(
                str(r["id"] or "-"), str(r["line"]), r["state"], r["code"] or "", r["message"] or ""
            )
        console.print(f)
