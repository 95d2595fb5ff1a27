"""``bulkscribe notify``: the outbox, for operators (list, replay)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pipeline.cli.shared import cli_settings, fail_usage


def _engine(settings: Any, out_dir: Path | None) -> Any:
    from pipeline.cli.shared import ledger_url
    from pipeline.ledger import open_ledger

    if out_dir is not None:
        out_dir = out_dir.absolute()
        if not settings.database_url and not (out_dir / ".bulkscribe" / "ledger.db").is_file():
            fail_usage(f"{out_dir} holds no bulkscribe run")
        return open_ledger(ledger_url(settings, out_dir)).engine
    if not settings.database_url:
        fail_usage("give --out DIR (an embedded run) or set BULKSCRIBE_DATABASE_URL")
    return open_ledger(settings.database_url).engine


def _message_json(m: Any) -> dict[str, Any]:
    from pipeline.inputs.manifest import display

    return {
        "id": m.id,
        "type": m.event_type,
        "batch_id": m.batch_id,
        "url": display(m.url),
        "state": m.state,
        "tries": m.tries,
        "next_at": m.next_at,
        "last_status": m.last_status,
        "last_error": m.last_error,
        "created_at": m.created_at,
        "delivered_at": m.delivered_at,
    }


OUT_OPTION = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory of an embedded run (its ledger).",
)
CONFIG_OPTION = click.option(
    "--config", type=click.Path(dir_okay=False), help="TOML settings file."
)


@click.group()
def notify() -> None:
    """Webhook notifications waiting, sent, failed; endpoints disabled by 410."""


@notify.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["PENDING", "DELIVERED", "FAILED", "DISABLED"]),
)
@click.option("--batch", help="Only this batch's events.")
@OUT_OPTION
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def notify_list(
    states: Sequence[str],
    batch: str | None,
    out_dir: Path | None,
    config: str | None,
    as_json: bool,
) -> None:
    """Messages in the outbox, newest first, and the disabled endpoints."""
    from pipeline.inputs.manifest import display
    from pipeline.notify import outbox

    engine = _engine(cli_settings(config), out_dir)
    msgs = [
        _message_json(m)
        for m in outbox.list_messages(engine, states=states or None, batch_id=batch)
    ]
    disabled = [{"url": display(url), **info} for url, info in outbox.disabled_urls(engine).items()]
    if as_json:
        click.echo(
            json.dumps(
                {"messages": msgs, "disabled_endpoints": disabled}, default=str, ensure_ascii=False
            )
        )
        return
    for m in msgs:
        last = m["last_error"] or (f"HTTP {m['last_status']}" if m["last_status"] else "")
        click.echo(
            f"{m['id']}  {m['type']:<20} {m['state']:<9} tries {m['tries']}  "
            f"{m['batch_id'] or '-'}  {m['url']}  {last}".rstrip()
        )
    click.echo(f"{len(msgs)} message(s)")
    for d in disabled:
        click.echo(f"disabled: {d['url']} since {d['disabled_at']} ({d['reason']})")


@notify.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Every message whose tries ran out (FAILED).")
@OUT_OPTION
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def notify_replay(
    ids: Sequence[str], failed: bool, out_dir: Path | None, config: str | None, as_json: bool
) -> None:
    """Send messages again from their first try (same webhook-id), now, for up to
    notify.flush_s; what is not delivered by then stays in the outbox. A message to a
    disabled endpoint, named by its id, enables the endpoint again."""
    from pipeline.notify import hooks, outbox

    if bool(ids) == failed:
        fail_usage("give message ids or --failed")
    from pipeline.log import configure_logging

    settings = cli_settings(config)
    configure_logging(level=settings.log_level)  # tries logged on stderr, not stdout
    engine = _engine(settings, out_dir)
    known = {m.id for m in outbox.list_messages(engine, ids=ids, limit=len(ids))}
    missing = [i for i in ids if i not in known]
    if missing:
        fail_usage(f"no message {', '.join(missing)}")
    queued = outbox.replay(engine, ids, failed=failed)
    report = hooks.flush(settings, engine, ids=queued) if queued else None
    states = report.states if report else {}
    if as_json:
        click.echo(json.dumps({"replayed": queued, "tries": states}))
        return
    click.echo(
        f"{len(queued)} message(s) replayed; "
        + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none sent")
    )
