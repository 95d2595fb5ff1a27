"""Distributed-mode commands: submit, worker, beat, retry, reprocess, dlq.

Loaded only when one of them is invoked, so ``bulkscribe run`` never imports Celery.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pipeline.cli.shared import (
    budget_options,
    cli_settings,
    fail_usage,
    intake_options,
    run_caps,
)


def _ledger(settings: Any) -> Any:
    from pipeline.ledger import open_ledger

    if not settings.database_url:
        fail_usage(
            "set BULKSCRIBE_DATABASE_URL (e.g. postgresql://user@host/db) for distributed mode"
        )
    return open_ledger(settings.database_url)


def _worker_ctx(settings: Any) -> Any:
    from workers.app import app, configure
    from workers.context import worker_context

    configure(app, settings)
    return worker_context(settings)


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail_usage(f"--option {pair!r}: use key=value")
        try:
            out[key] = json.loads(value)  # numbers, booleans, lists
        except ValueError:
            out[key] = value
    return out


def _kick(wctx: Any, ids: Iterable[str]) -> int:
    """Queue the first steps now instead of waiting for the next sweep."""
    from workers.dispatch import dispatch_after

    ids = list(ids)
    room = wctx.settings.distributed.max_prepared
    return dispatch_after(wctx, ids[:room])


LOG_LEVELS = ("debug", "info", "warning", "error")


def _echo(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str) if as_json else text)


@click.command(
    epilog="Each INPUT is a media file, a directory or a manifest, as for `run`; "
    "or s3://bucket/prefix/ (oss://...) to list a prefix, or an S3 Inventory "
    "manifest.json (s3:// or local)."
)
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    "out",
    required=True,
    help="Where results go: a directory all workers can reach, or s3://bucket/prefix.",
)
@click.option(
    "--batch",
    "resume",
    help="Resume this batch's intake (a submit that was "
    "interrupted): lines already entered are kept, the rest added.",
)
@click.option(
    "--engine", type=click.Choice(["local", "dashscope"]), help="ASR engine (default local)."
)
@click.option(
    "--model",
    help="tiny.en (default), base, a faster-whisper name in the workers' "
    "download cache or a model directory; DashScope: fun-asr, "
    "qwen3-asr-flash-filetrans, ...",
)
@click.option("--language", help="Language code, e.g. en, zh (default: detect).")
@click.option(
    "--context", help="Initial prompt / context text for every item (an item's own context wins)."
)
@click.option("--hotwords", help="Words to favour, local engine (an item's own hotwords win).")
@click.option("--option", "options", multiple=True, help="Provider option key=value.")
@intake_options(
    notify_help="Send signed webhooks (batch.completed, batch.items_dead) here; repeatable."
)
@click.option("--json", "as_json", is_flag=True, help="Print the batch id as JSON.")
def submit(
    inputs: tuple[str, ...],
    out: str,
    resume: str | None,
    engine: str | None,
    model: str | None,
    language: str | None,
    context: str | None,
    hotwords: str | None,
    options: Sequence[str],
    manifest_format: str | None,
    strict: bool,
    max_audio_hours: float | None,
    max_cost: float | None,
    config: str | None,
    notify_urls: tuple[str, ...],
    as_json: bool,
) -> None:
    """Queue the INPUTs' items for the workers; prints the batch id.

    The manifest is read and entered in chunks as it streams: the workers start on the
    first items while the rest are entered. Submitting the same INPUTs to the same --out
    again (or --batch BATCH) resumes an interrupted submit.

    Engine knobs (beam size, device, compute type, threads, VAD, task, subtitle layout) are
    the workers' own settings (BULKSCRIBE_LOCAL__*, BULKSCRIBE_SUBTITLES__*).
    """
    from pipeline.cli.shared import BadInput, checked_notify_urls
    from pipeline.inputs.batches import new_batch_id
    from pipeline.inputs.intake import enter_stream
    from pipeline.inputs.manifest import InputStream, ManifestUnreadable
    from pipeline.ledger.budgets import set_caps

    settings = cli_settings(config, engine=engine, model=model, language=language)
    notify_urls = checked_notify_urls(notify_urls, settings)
    # The stream is not read twice to find the lines' models: the batch's model must have a
    # price, and every other model of the table is priced too, so each item is admitted at
    # its own model's price (a line naming a model without one never fits a cost cap).
    caps, currency = run_caps(settings, [settings.model], max_audio_hours, max_cost, others=True)
    out = normalize_out(out)
    try:
        stream = InputStream(
            inputs,
            fmt=manifest_format,
            strict=strict,
            max_bytes=settings.manifest.max_bytes,
            client=_s3_clients(settings),
        )
        stream.open()  # an unreadable listing fails here, before a batch is made
    except ManifestUnreadable as exc:
        raise BadInput(str(exc)) from None
    wctx = _worker_ctx(settings)
    extra = _parse_options(options)
    extra.update({k: v for k, v in (("context", context), ("hotwords", hotwords)) if v})
    if resume:
        holder = wctx.ledger.batch(resume)
        if holder is None:
            fail_usage(f"no batch {resume}")
        batch_id = _resume_or_refuse(holder, out, stream.path)
    else:
        batch_id = new_batch_id()
        holder = wctx.ledger.reserve_out(
            batch_id,
            out=out,
            kind="submit",
            engine=settings.engine,
            model=settings.model,
            manifest=stream.path,
            options={
                "language": settings.language,
                **extra,
                **({"notify_urls": list(notify_urls)} if notify_urls else {}),
            },
        )
        if holder is not None:
            batch_id = _resume_or_refuse(holder, out, stream.path)
    if holder is None or caps.active:
        # Before the items exist, so no worker prepares one the caps do not know about.
        set_caps(wctx.ledger, batch_id, caps, currency=currency)
    kicked = [False]

    def kick(ids: Sequence[str]) -> None:
        # The first chunk's first steps are queued at once; the sweeper finds the rest
        # (PENDING rows) within its interval. Queueing every item from here would cost a
        # ledger write and a broker message each, and slow the intake tenfold.
        if not kicked[0]:
            kicked[0] = True
            _kick(wctx, ids[:KICK_FIRST])

    try:
        report = enter_stream(
            wctx.ledger,
            batch_id,
            stream,
            engine=settings.engine,
            model=settings.model,
            language=settings.language,
            options=extra,
            on_chunk=kick,
        )
    except ManifestUnreadable as exc:  # found while reading on: what was entered stays
        raise BadInput(f"{exc} (batch {batch_id}: submit again to resume)") from None
    if report.created:
        wctx.ledger.mark_batch_done(batch_id, False)  # a resumed batch has new work
    for warning in stream.warnings():
        click.echo(f"warning: {warning}", err=True)
    if holder is not None and not as_json:
        click.echo(
            f"resuming batch {batch_id} ({report.created} new, {report.kept} kept)", err=True
        )
    _echo(
        as_json,
        {
            "batch_id": batch_id,
            "total": report.total,
            "out": out,
            "resumed": holder is not None,
            "created": report.created,
            "kept": report.kept,
            "duplicates": report.duplicates,
        },
        batch_id,
    )


KICK_FIRST = 50  # items whose first step submit queues itself


def normalize_out(out: str) -> str:
    """One spelling per output location, so two batches cannot share one unnoticed: local
    paths absolute with symlinks and ``..`` resolved, URL prefixes without a trailing /."""
    if "://" in out and not out.startswith("file://"):
        scheme, _, rest = out.partition("://")
        return f"{scheme.lower()}://{rest.rstrip('/')}"
    return str(Path(out.removeprefix("file://")).expanduser().resolve())


def _resume_or_refuse(holder: Mapping[str, Any], out: str, manifest: str) -> str:
    """``--out`` is already a batch's: the same manifest resumes that batch (like ``run``
    into the same directory); anything else would overwrite its outputs and results.jsonl."""
    if (
        holder.get("kind") == "submit"
        and holder.get("manifest") == manifest
        and holder.get("out") == out
    ):
        return str(holder["id"])
    fail_usage(
        f"--out {out} is used by batch {holder['id']} (manifest "
        f"{holder.get('manifest')}); give each batch its own --out, or submit "
        f"{holder.get('manifest')} again to resume that batch"
    )


def _s3_clients(settings: Any) -> Any:
    """scheme -> S3 client, made on first use (listing and inventory INPUTs)."""
    made: dict[str, Any] = {}

    def client(scheme: str) -> Any:
        if scheme not in made:
            from pipeline.inputs.manifest import ManifestUnreadable
            from pipeline.storage.s3 import make_client

            if scheme == "oss" and not settings.s3_endpoint_url:
                raise ManifestUnreadable(
                    "oss:// needs BULKSCRIBE_S3_ENDPOINT_URL, e.g. "
                    "https://oss-ap-southeast-1.aliyuncs.com"
                )

            made[scheme] = make_client(endpoint_url=settings.s3_endpoint_url, oss=scheme == "oss")
        return made[scheme]

    return client


@click.command()
@click.option(
    "--queues",
    "-Q",
    default="prepare,provider,transcribe",
    help="Comma-separated queues to consume.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    help="Processes or threads (default: cores; 8 threads for the provider queue).",
)
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["auto", "prefork", "threads", "solo"]),
    default="auto",
    show_default=True,
    help="auto: threads for the provider queue alone (it only waits on HTTP and "
    "the ledger), else prefork (ffmpeg and the model need processes).",
)
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@click.option("--name", "-n", help="Node name (default: bulkscribe-<queues>@host).")
@click.option(
    "--log-level",
    "log_level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="What reaches stderr: one JSON line per step at info (default: the "
    "log_level setting if set, else info).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug lines too (--log-level debug).")
@click.option("--config", type=click.Path(dir_okay=False))
def worker(
    queues: str,
    concurrency: int | None,
    pool: str,
    metrics_port: int | None,
    name: str | None,
    log_level: str | None,
    verbose: bool,
    config: str | None,
) -> None:
    """Run a Celery worker on the given queues (SIGTERM: finish current steps, then exit)."""
    if config:
        os.environ["BULKSCRIBE_CONFIG"] = str(Path(config).absolute())
    settings = _service_settings(config, "debug" if verbose else log_level)
    port = metrics_port or settings.distributed.metrics_port
    if port:
        # Before prometheus_client is imported: children write to files the parent sums.
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bulkscribe-metrics-")
        )
    from workers.app import app, configure

    configure(app, settings)
    if port:
        from workers.metrics import serve

        serve(port)
    pool, concurrency = worker_pool(queues, pool, concurrency)
    if pool == "threads":  # tasks run in this process: build its context before they come
        from workers.signals import warm_up

        warm_up()
    argv = [
        "worker",
        "-Q",
        queues,
        "-P",
        pool,
        "--loglevel",
        settings.log_level.upper(),
        "-n",
        name or f"bulkscribe-{queues.replace(',', '-')}@%h",
    ]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main(argv=argv)


def worker_pool(queues: str, pool: str, concurrency: int | None) -> tuple[str, int | None]:
    """The Celery pool and concurrency for ``--pool``: auto picks threads (8 unless given)
    for a worker on the provider queue alone, prefork otherwise."""
    if pool != "auto":
        return pool, concurrency
    if {q.strip() for q in queues.split(",") if q.strip()} == {"provider"}:
        return "threads", concurrency or PROVIDER_THREADS
    return "prefork", concurrency


PROVIDER_THREADS = 8


def _service_settings(config: str | None, log_level: str | None) -> Any:
    """Settings for a long-running worker or beat: logs at info unless told otherwise (the
    ``log_level`` setting's own default, warning, suits interactive commands)."""
    settings = cli_settings(config)
    if log_level is None and "log_level" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"log_level": (log_level or "info").lower()})


@click.command()
@click.option(
    "--log-level",
    "log_level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Default: the log_level setting if set, else info.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug lines too (--log-level debug).")
@click.option("--config", type=click.Path(dir_okay=False))
def beat(log_level: str | None, verbose: bool, config: str | None) -> None:
    """Run the scheduler: the sweeper every few seconds, and the configured schedules."""
    if config:
        os.environ["BULKSCRIBE_CONFIG"] = str(Path(config).absolute())
    settings = _service_settings(config, "debug" if verbose else log_level)
    from workers.app import app, configure

    configure(app, settings)
    app.start(
        argv=[
            "beat",
            "--loglevel",
            settings.log_level.upper(),
            "-S",
            "workers.beat:ResilientRedBeatScheduler",
        ]
    )


@click.command()
@click.argument("batch")
@budget_options
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def retry(
    batch: str,
    max_audio_hours: float | None,
    max_cost: float | None,
    config: str | None,
    as_json: bool,
) -> None:
    """Give a batch's FAILED and DEAD items a new attempt; with a higher cap
    (--max-audio-hours, --max-cost), its SKIPPED items too."""
    from pipeline.operations import retry_batch

    settings = cli_settings(config)
    wctx = _worker_ctx(settings)
    if wctx.ledger.batch(batch) is None:
        fail_usage(f"no batch {batch}")
    ids = retry_batch(wctx.ledger, batch, actor=actor())
    ids += _recap(settings, wctx.ledger, batch, max_audio_hours, max_cost)
    _kick(wctx, ids)
    _echo(as_json, {"batch_id": batch, "retried": len(ids)}, f"{len(ids)} item(s) retried")


@click.command()
@click.argument("batch", required=False)
@click.option("--item", "item_ids", multiple=True, help="An item (ledger id or BATCH/ID).")
@click.option(
    "--status",
    "states",
    multiple=True,
    type=click.Choice(["SUCCEEDED", "FAILED", "DEAD", "SKIPPED"]),
    help="Items in this state.",
)
@click.option("--model", help="Transcribe with this model instead.")
@click.option("--engine", type=click.Choice(["local", "dashscope"]))
@click.option("--option", "options", multiple=True, help="Provider option key=value.")
@budget_options
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def reprocess(
    batch: str | None,
    item_ids: Sequence[str],
    states: Sequence[str],
    model: str | None,
    engine: str | None,
    options: Sequence[str],
    max_audio_hours: float | None,
    max_cost: float | None,
    config: str | None,
    as_json: bool,
) -> None:
    """New attempts for a batch, some items, or items in a state; old results stay until
    the new ones are written."""
    from pipeline.operations import reprocess as reprocess_rows
    from pipeline.states import ItemState

    if not (batch or item_ids or states):
        fail_usage("give a BATCH, --item ID or --status STATE")
    settings = cli_settings(config)
    wctx = _worker_ctx(settings)
    rows = _select(wctx.ledger, batch, item_ids, [ItemState(s) for s in states])
    restarted = reprocess_rows(
        wctx.ledger,
        rows,
        actor=actor(),
        model=model,
        engine=engine,
        options=_parse_options(options),
    )
    if batch:  # a higher cap re-admits the batch's SKIPPED items too
        restarted += _recap(settings, wctx.ledger, batch, max_audio_hours, max_cost)
    elif max_audio_hours is not None or max_cost is not None:
        fail_usage("--max-audio-hours and --max-cost apply to a BATCH")
    _kick(wctx, restarted)
    _echo(
        as_json,
        {"reprocessed": len(restarted), "items": restarted},
        f"{len(restarted)} item(s) queued for reprocessing",
    )


def find_item(ledger: Any, ref: str) -> Any:
    """An item by ledger id, or as ``BATCH/ID`` (its batch and manifest id, as ``dlq list``
    prints it); None if there is no such item."""
    row = ledger.get(ref)
    if row is None and "/" in ref:
        batch, key = ref.split("/", 1)
        found = ledger.list_items(batch, keys=[key])
        row = found[0] if found else None
    return row


def _items(ledger: Any, refs: Sequence[str]) -> list[Any]:
    """The items ``refs`` name (ids or BATCH/ID); a usage error naming any that do not exist."""
    rows = [find_item(ledger, ref) for ref in refs]
    missing = [ref for ref, row in zip(refs, rows, strict=True) if row is None]
    if missing:
        fail_usage(f"no item {', '.join(missing)}")
    return rows


def _recap(
    settings: Any, ledger: Any, batch: str, max_audio_hours: float | None, max_cost: float | None
) -> list[str]:
    """New caps for a batch (the flags given, the others kept); the SKIPPED items a
    higher cap re-admits start again. No flags: nothing changes."""
    from pipeline.errors import PipelineError
    from pipeline.ledger.budgets import get_budget, set_caps
    from pipeline.planning.budget import Caps
    from pipeline.planning.pricing import caps_for

    if max_audio_hours is None and max_cost is None:
        return []
    old = get_budget(ledger, batch)
    old_caps = old.caps if old is not None else Caps()
    info = ledger.batch(batch) or {}
    models = [
        str(info.get("model") or settings.model),
        *(r.request.model for r in ledger.list_items(batch) if r.request.model),
    ]
    hours = (
        max_audio_hours
        if max_audio_hours is not None
        else (None if old_caps.max_audio_s is None else old_caps.max_audio_s / 3600)
    )
    cost = max_cost if max_cost is not None else old_caps.max_cost
    try:
        caps, currency = caps_for(
            settings,
            str(info.get("engine") or settings.engine),
            models,
            max_audio_hours=hours,
            max_cost=cost,
        )
    except PipelineError as exc:
        fail_usage(exc.message)
    return list(set_caps(ledger, batch, caps, currency=currency))


def _select(
    ledger: Any, batch: str | None, item_ids: Sequence[str], states: Sequence[Any]
) -> list[Any]:
    rows = []
    if item_ids:
        rows = _items(ledger, item_ids)
    elif batch or states:
        if batch and ledger.batch(batch) is None:
            fail_usage(f"no batch {batch}")
        rows = ledger.list_items(batch, states=states or None)
    return [r for r in rows if not r.is_problem]


@click.group()
def dlq() -> None:
    """The dead-letter set: items whose retries ran out (state DEAD)."""


def _dead(ledger: Any, batch: str | None) -> list[Any]:
    from pipeline.states import ItemState

    rows: list[Any] = ledger.list_items(batch, states=[ItemState.DEAD])
    return rows


@dlq.command("list")
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_list(batch: str | None, config: str | None, as_json: bool) -> None:
    """Dead items, oldest batch first."""
    from pipeline.inputs.manifest import display

    ledger = _ledger(cli_settings(config))
    rows = _dead(ledger, batch)
    data = [
        {
            "item": r.id,
            "batch_id": r.batch_id,
            "id": r.key,
            "source": display(r.source),
            "code": r.error_code,
            "message": r.error_message,
            "attempt": r.attempt,
            "finished_at": r.finished_at,
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(data, default=str, ensure_ascii=False))
        return
    for d in data:
        click.echo(f"{d['item']}  {d['batch_id']}/{d['id']}  {d['code']}: {d['message']}")
    click.echo(f"{len(data)} dead item(s)")


@dlq.command("show")
@click.argument("item", metavar="ITEM|BATCH/ID")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_show(item: str, config: str | None, as_json: bool) -> None:
    """One item (ledger id or BATCH/ID) with every attempt and the provider's error
    details."""
    from pipeline.inputs.manifest import display

    ledger = _ledger(cli_settings(config))
    row = _items(ledger, [item])[0]
    data = {
        "item": row.id,
        "batch_id": row.batch_id,
        "id": row.key,
        "state": row.state.value,
        "source": display(row.source),
        "spec": row.spec,
        "code": row.error_code,
        "message": row.error_message,
        "detail": row.error_detail,
        "attempts": ledger.attempts_of(row.id),
    }
    _echo(as_json, data, _show_text(data))


def _show_text(d: Mapping[str, Any]) -> str:
    """``dlq show`` for people: the item, its error, then one line per attempt."""
    lines = [
        f"{d['batch_id']}/{d['id']}  ({d['item']})",
        f"  state    {d['state']}",
        f"  source   {d['source']}",
    ]
    if d["code"]:
        lines.append(f"  error    {d['code']}: {d['message']}")
    for key, value in sorted(dict(d["detail"] or {}).items()):
        lines.append(f"           {key}: {value}")
    lines.append(f"  attempts {len(d['attempts'])}")
    for a in d["attempts"]:
        end = f"{a['error_code']}: {a['error_message']}" if a.get("error_code") else ""
        task = f"  task {a['provider_task_id']}" if a.get("provider_task_id") else ""
        request = f"  request {a['provider_request_id']}" if a.get("provider_request_id") else ""
        lines.append(
            f"    #{a['number']} {a['state']:<9} {a['engine']}/{a['model']}  "
            f"started {a['started_at']:%Y-%m-%d %H:%M:%S}{task}{request}"
            + (f"\n       {end}" if end else "")
        )
    return "\n".join(lines)


def _targets(ledger: Any, items: Sequence[str], all_: bool, batch: str | None) -> list[Any]:
    if items:
        return [r for r in _items(ledger, items) if r.state.value == "DEAD"]
    if not (all_ or batch):
        fail_usage("give item ids, --batch B or --all")
    return _dead(ledger, batch)


@dlq.command("replay")
@click.argument("items", nargs=-1, metavar="[ITEM|BATCH/ID]...")
@click.option("--all", "all_", is_flag=True)
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(
    items: Sequence[str], all_: bool, batch: str | None, config: str | None, as_json: bool
) -> None:
    """Give dead items a new attempt."""
    from pipeline.operations import replay

    wctx = _worker_ctx(cli_settings(config))
    ids = replay(wctx.ledger, _targets(wctx.ledger, items, all_, batch), actor=actor())
    _kick(wctx, ids)
    _echo(as_json, {"replayed": len(ids), "items": ids}, f"{len(ids)} item(s) replayed")


@dlq.command("purge")
@click.argument("items", nargs=-1, metavar="[ITEM|BATCH/ID]...")
@click.option("--all", "all_", is_flag=True)
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_purge(
    items: Sequence[str], all_: bool, batch: str | None, config: str | None, as_json: bool
) -> None:
    """Take items out of the dead-letter set for good: they become FAILED, error kept."""
    from pipeline.operations import purge
    from pipeline.outputs.results import close_batch
    from workers.context import sink_for

    settings = cli_settings(config)
    ledger = _ledger(settings)
    rows = _targets(ledger, items, all_, batch)
    purged = purge(ledger, rows, actor=actor())
    for b in sorted({r.batch_id for r in rows if r.id in set(purged)}):
        # rewritten now (else by the next sweep): its results.jsonl still says DEAD
        out = str((ledger.batch(b) or {}).get("out") or "")
        close_batch(ledger, b, sink_for(out, settings), owner=f"cli:{os.getpid()}")
    _echo(as_json, {"purged": len(purged), "items": purged}, f"{len(purged)} item(s) purged")


@click.command()
@click.argument("batch", required=False)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Output directory of an embedded run (its batch; the next run keeps the "
    "cancelled items cancelled).",
)
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def cancel(batch: str | None, out_dir: Path | None, config: str | None, as_json: bool) -> None:
    """Cancel a batch: nothing more of it is submitted, queued provider tasks are cancelled,
    and its unfinished items end CANCELLED."""
    from pipeline.log import configure_logging
    from pipeline.operations import cancel_batch

    settings = cli_settings(config)
    configure_logging(level=settings.log_level)  # log lines to stderr, never into --json
    ledger, batch_id = open_target(settings, batch, out_dir)
    with provider_canceller(settings) as cancel_task:
        report = cancel_batch(ledger, batch_id, actor=actor(), cancel_task=cancel_task)
    _echo(
        as_json,
        report.as_json(batch_id),
        f"{len(report.cancelled)} item(s) cancelled, {len(report.tasks_cancelled)} provider "
        f"task(s) cancelled, {len(report.tasks_running)} already running",
    )


def actor() -> str:
    """Who runs this command, for the ledger's record of operator actions."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def open_target(settings: Any, batch: str | None, out_dir: Path | None) -> tuple[Any, str]:
    """The ledger and batch a command means: an embedded run's --out, or a fleet BATCH."""
    from pipeline.cli.shared import ledger_url
    from pipeline.inputs.batches import batch_id_for
    from pipeline.ledger import open_ledger

    if out_dir is not None:
        out_dir = out_dir.absolute()
        if not settings.database_url and not (out_dir / ".bulkscribe" / "ledger.db").is_file():
            fail_usage(f"{out_dir} holds no bulkscribe run")
        ledger = open_ledger(ledger_url(settings, out_dir))
        batch = batch or batch_id_for(out_dir)
    elif batch is None:
        fail_usage("give a BATCH id or --out DIR")
    else:
        ledger = _ledger(settings)
    if ledger.batch(batch) is None:
        fail_usage(f"no batch {batch}")
    return ledger, batch


@contextlib.contextmanager
def provider_canceller(settings: Any) -> Iterator[Callable[[str], None] | None]:
    """DashScope's task cancel (E8) when an API key is configured, else None."""
    if settings.dashscope_api_key is None:
        yield None
        return
    from pipeline.wiring import http_client, provider_factory

    with http_client(settings) as http:
        factory = provider_factory(settings, http)
        yield factory().cancel_task if factory is not None else None
