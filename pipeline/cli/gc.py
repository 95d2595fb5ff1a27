"""``bulkscribe gc``: delete finished batches' item and attempt rows, keep their totals.

A ledger that has seen millions of items stays small: once a batch's results.jsonl is
written, its per-item rows are only history. ``gc`` keeps each collected batch's counts by
state, item total and audio seconds in the batch row, so ``status`` still shows them, and
refuses (leaves alone) batches not finished.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from pipeline.cli.shared import cli_settings, fail_usage


def _date(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail_usage(
            f"--finished-before {value!r}: use a date or time, e.g. 2026-11-30 or "
            "2026-11-30T12:00:00Z"
        )
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.command()
@click.option(
    "--finished-before",
    "before",
    required=True,
    help="Collect batches whose results were written before this date (UTC unless "
    "an offset is given).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be collected; delete nothing.")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def gc(before: str, dry_run: bool, config: str | None, as_json: bool) -> None:
    """Delete finished batches' item and attempt rows, keeping their totals."""
    from pipeline.ledger import open_ledger
    from pipeline.ledger.bulk import collect, collectable

    settings = cli_settings(config)
    if not settings.database_url:
        fail_usage("set BULKSCRIBE_DATABASE_URL: gc works on the distributed ledger")
    ledger = open_ledger(settings.database_url)
    found = collectable(ledger.engine, _date(before))
    collected: list[dict[str, Any]] = []
    refused: list[str] = []
    for batch in found:
        if not batch.finished:
            refused.append(batch.batch_id)
            continue
        deleted = batch.totals["total"] if dry_run else collect(ledger.engine, batch)
        collected.append({"batch_id": batch.batch_id, "items": deleted, **batch.totals})
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "collected": collected, "refused": refused}))
        return
    verb = "would delete" if dry_run else "deleted"
    for c in collected:
        click.echo(
            f"{c['batch_id']}: {verb} {c['items']} item(s); totals kept "
            f"({c['audio_s']:.0f} s of audio)"
        )
    for batch_id in refused:
        click.echo(f"{batch_id}: not finished, left alone", err=True)
