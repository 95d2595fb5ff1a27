"""Distributed-mode commands: submit, worker, beat, retry, reprocess, dlq.

Loaded only when one of them is invoked, so ``bulkscribe run`` never imports Celery.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from pipeline.cli import _fail_usage, _settings


def _ledger(settings: Any) -> Any:
    from pipeline.ledger import open_ledger

    if not settings.database_url:
        _fail_usage("set BULKSCRIBE_DATABASE_URL (e.g. postgresql://user@host/db) for "
                    "distributed mode")
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
            _fail_usage(f"--option {pair!r}: use key=value")
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


def _echo(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str) if as_json else text)


@click.command(epilog="Each INPUT is a media file, a directory or a manifest, as for `run`; "
               "or s3://bucket/prefix/ (oss://...) to list a prefix, or an S3 Inventory "
               "manifest.json (s3:// or local).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out", required=True,
              help="Where results go: a directory all workers can reach, or s3://bucket/prefix.")
@click.option("--batch", "resume", help="Resume this batch's intake (a submit that was "
              "interrupted): lines already entered are kept, the rest added.")
@click.option("--engine", type=click.Choice(["local", "dashscope"]),
              help="ASR engine (default local).")
@click.option("--model", help="tiny.en (default), base, a faster-whisper name in the workers' "
              "download cache or a model directory; DashScope: fun-asr, "
              "qwen3-asr-flash-filetrans, ...")
@click.option("--language", help="Language code, e.g. en, zh (default: detect).")
@click.option("--context", help="Initial prompt / context text for every item (an item's own "
              "context wins).")
@click.option("--hotwords", help="Words to favour, local engine (an item's own hotwords win).")
@click.option("--option", "options", multiple=True, help="Provider option key=value.")
@click.option("--manifest-format", type=click.Choice(["jsonl", "csv", "list", "dir"]),
              help="Override format detection of a single manifest INPUT.")
@click.option("--strict", is_flag=True,
              help="Unknown manifest fields fail their lines (manifest_invalid), not warn.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print the batch id as JSON.")
def submit(inputs: tuple[str, ...], out: str, resume: str | None, engine: str | None,
           model: str | None, language: str | None, context: str | None,
           hotwords: str | None, options: Sequence[str], manifest_format: str | None,
           strict: bool, config: str | None, as_json: bool) -> None:
    """Queue the INPUTs' items for the workers; prints the batch id.

    The manifest is read and entered in chunks as it streams: the workers start on the
    first items while the rest are entered. Submitting the same INPUTs to the same --out
    again (or --batch BATCH) resumes an interrupted submit.

    Engine knobs (beam size, device, compute type, threads, VAD, task, subtitle layout) are
    the workers' own settings (BULKSCRIBE_LOCAL__*, BULKSCRIBE_SUBTITLES__*).
    """
    from pipeline.batches import new_batch_id
    from pipeline.cli import BadInput
    from pipeline.intake import enter_stream
    from pipeline.ledger.bulk import holder_of
    from pipeline.manifest import InputStream, ManifestUnreadable

    settings = _settings(config, engine=engine, model=model, language=language)
    if "://" not in out:
        out = str(Path(out).absolute())
    try:
        stream = InputStream(inputs, fmt=manifest_format, strict=strict,
                             max_bytes=settings.manifest.max_bytes,
                             client=_s3_clients(settings))
        stream.open()  # an unreadable listing fails here, before a batch is made
    except ManifestUnreadable as exc:
        raise BadInput(str(exc)) from None
    wctx = _worker_ctx(settings)
    extra = _parse_options(options)
    extra.update({k: v for k, v in (("context", context), ("hotwords", hotwords)) if v})
    holder = wctx.ledger.batch(resume) if resume else holder_of(wctx.ledger.engine, out)
    if resume and holder is None:
        _fail_usage(f"no batch {resume}")
    if holder is not None and (holder["kind"] != "submit" or holder["manifest"] != stream.path
                               or holder["out"] != out):
        _fail_usage(f"--out {holder['out']} is used by batch {holder['id']} (manifest "
                    f"{holder['manifest']}); give each batch its own --out, or submit "
                    f"{holder['manifest']} to it again to resume that batch")
    batch_id = str(holder["id"]) if holder else new_batch_id()
    if holder is None:
        wctx.ledger.ensure_batch(batch_id, kind="submit", out=out, engine=settings.engine,
                                 model=settings.model, manifest=stream.path,
                                 options={"language": settings.language, **extra})
    kicked = [False]

    def kick(ids: Sequence[str]) -> None:
        # The first chunk's first steps are queued at once; the sweeper finds the rest
        # (PENDING rows) within its interval. Queueing every item from here would cost a
        # ledger write and a broker message each, and slow the intake tenfold.
        if not kicked[0]:
            kicked[0] = True
            _kick(wctx, ids[:KICK_FIRST])

    try:
        report = enter_stream(wctx.ledger, batch_id, stream, engine=settings.engine,
                              model=settings.model, language=settings.language, options=extra,
                              on_chunk=kick)
    except ManifestUnreadable as exc:  # found while reading on: what was entered stays
        raise BadInput(f"{exc} (batch {batch_id}: submit again to resume)") from None
    for warning in stream.warnings():
        click.echo(f"warning: {warning}", err=True)
    if holder is not None and not as_json:
        click.echo(f"resuming batch {batch_id} ({report.created} new, {report.kept} kept)",
                   err=True)
    _echo(as_json, {"batch_id": batch_id, "total": report.total, "out": out,
                    "resumed": holder is not None, "created": report.created,
                    "kept": report.kept, "duplicates": report.duplicates}, batch_id)


KICK_FIRST = 50  # items whose first step submit queues itself


def _s3_clients(settings: Any) -> Any:
    """scheme -> S3 client, made on first use (listing and inventory INPUTs)."""
    made: dict[str, Any] = {}

    def client(scheme: str) -> Any:
        if scheme not in made:
            from pipeline.manifest import ManifestUnreadable
            from pipeline.storage import make_client

            if scheme == "oss" and not settings.s3_endpoint_url:
                raise ManifestUnreadable("oss:// needs BULKSCRIBE_S3_ENDPOINT_URL, e.g. "
                                         "https://oss-ap-southeast-1.aliyuncs.com")

            made[scheme] = make_client(endpoint_url=settings.s3_endpoint_url,
                                       oss=scheme == "oss")
        return made[scheme]

    return client


@click.command()
@click.option("--queues", "-Q", default="prepare,provider,transcribe",
              help="Comma-separated queues to consume.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 256),
              help="Processes or threads (default: cores; 8 threads for the provider queue).")
@click.option("--pool", "-P", type=click.Choice(["auto", "prefork", "threads", "solo"]),
              default="auto", show_default=True,
              help="auto: threads for the provider queue alone (it only waits on HTTP and "
                   "the ledger), else prefork (ffmpeg and the model need processes).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@click.option("--name", "-n", help="Node name (default: bulkscribe-<queues>@host).")
@click.option("--config", type=click.Path(dir_okay=False))
def worker(queues: str, concurrency: int | None, pool: str, metrics_port: int | None,
           name: str | None, config: str | None) -> None:
    """Run a Celery worker on the given queues (SIGTERM: finish current steps, then exit)."""
    if config:
        os.environ["BULKSCRIBE_CONFIG"] = str(Path(config).absolute())
    settings = _settings(config)
    port = metrics_port or settings.distributed.metrics_port
    if port:
        # Before prometheus_client is imported: children write to files the parent sums.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                              tempfile.mkdtemp(prefix="bulkscribe-metrics-"))
    from workers.app import app, configure

    configure(app, settings)
    if port:
        from workers.metrics import serve

        serve(port)
    pool, concurrency = worker_pool(queues, pool, concurrency)
    if pool == "threads":  # tasks run in this process: build its context before they come
        from workers.signals import warm_up

        warm_up()
    argv = ["worker", "-Q", queues, "-P", pool, "--loglevel", settings.log_level.upper(),
            "-n", name or f"bulkscribe-{queues.replace(',', '-')}@%h"]
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


@click.command()
@click.option("--config", type=click.Path(dir_okay=False))
def beat(config: str | None) -> None:
    """Run the scheduler: the sweeper every few seconds, and the configured schedules."""
    if config:
        os.environ["BULKSCRIBE_CONFIG"] = str(Path(config).absolute())
    settings = _settings(config)
    from workers.app import app, configure

    configure(app, settings)
    app.start(argv=["beat", "--loglevel", settings.log_level.upper(),
                    "-S", "workers.beat:ResilientRedBeatScheduler"])


@click.command()
@click.argument("batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def retry(batch: str, config: str | None, as_json: bool) -> None:
    """Give a batch's FAILED and DEAD items a new attempt."""
    from pipeline.states import ItemState

    settings = _settings(config)
    wctx = _worker_ctx(settings)
    if wctx.ledger.batch(batch) is None:
        _fail_usage(f"no batch {batch}")
    rows = wctx.ledger.list_items(batch, states=[ItemState.FAILED, ItemState.DEAD])
    ids = [r.id for r in rows if wctx.ledger.restart(r.id)]
    _kick(wctx, ids)
    _echo(as_json, {"batch_id": batch, "retried": len(ids)}, f"{len(ids)} item(s) retried")


@click.command()
@click.argument("batch", required=False)
@click.option("--item", "item_ids", multiple=True, help="An item (ledger id or BATCH/ID).")
@click.option("--status", "states", multiple=True,
              type=click.Choice(["SUCCEEDED", "FAILED", "DEAD"]), help="Items in this state.")
@click.option("--model", help="Transcribe with this model instead.")
@click.option("--engine", type=click.Choice(["local", "dashscope"]))
@click.option("--option", "options", multiple=True, help="Provider option key=value.")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def reprocess(batch: str | None, item_ids: Sequence[str], states: Sequence[str],
              model: str | None, engine: str | None, options: Sequence[str],
              config: str | None, as_json: bool) -> None:
    """New attempts for a batch, some items, or items in a state; old results stay until
    the new ones are written."""
    from pipeline.batches import fingerprint
    from pipeline.states import ItemState

    if not (batch or item_ids or states):
        _fail_usage("give a BATCH, --item ID or --status STATE")
    settings = _settings(config)
    wctx = _worker_ctx(settings)
    rows = _select(wctx.ledger, batch, item_ids, [ItemState(s) for s in states])
    extra = _parse_options(options)
    restarted = []
    for row in rows:
        if not row.state.terminal:
            continue  # still in progress: let it finish first
        spec = dict(row.spec)
        if model:
            spec["model"] = model
        if engine:
            spec["engine"] = engine
        if extra:
            spec["options"] = {**dict(spec.get("options") or {}), **extra}
        if wctx.ledger.restart(row.id, spec=spec, fingerprint=fingerprint(spec)):
            restarted.append(row.id)
    _kick(wctx, restarted)
    _echo(as_json, {"reprocessed": len(restarted), "items": restarted},
          f"{len(restarted)} item(s) queued for reprocessing")


def _select(ledger: Any, batch: str | None, item_ids: Sequence[str],
            states: Sequence[Any]) -> list[Any]:
    rows = []
    if item_ids:
        for ref in item_ids:
            row = ledger.get(ref)
            if row is None and "/" in ref:
                b, key = ref.split("/", 1)
                found = ledger.list_items(b, keys=[key])
                row = found[0] if found else None
            if row is None:
                _fail_usage(f"no item {ref}")
            rows.append(row)
    elif batch or states:
        if batch and ledger.batch(batch) is None:
            _fail_usage(f"no batch {batch}")
        rows = ledger.list_items(batch, states=states or None)
    return [r for r in rows if not r.key.startswith("@")]


@click.group()
def dlq() -> None:
    """The dead-letter set: items whose retries ran out (state DEAD)."""


def _dead(ledger: Any, batch: str | None) -> list[Any]:
    from pipeline.states import ItemState

    return ledger.list_items(batch, states=[ItemState.DEAD])


@dlq.command("list")
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_list(batch: str | None, config: str | None, as_json: bool) -> None:
    """Dead items, oldest batch first."""
    from pipeline.manifest import display

    ledger = _ledger(_settings(config))
    rows = _dead(ledger, batch)
    data = [{"item": r.id, "batch_id": r.batch_id, "id": r.key, "source": display(r.source),
             "code": r.error_code, "message": r.error_message, "attempt": r.attempt,
             "finished_at": r.finished_at} for r in rows]
    if as_json:
        click.echo(json.dumps(data, default=str, ensure_ascii=False))
        return
    for d in data:
        click.echo(f"{d['item']}  {d['batch_id']}/{d['id']}  {d['code']}: {d['message']}")
    click.echo(f"{len(data)} dead item(s)")


@dlq.command("show")
@click.argument("item")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_show(item: str, config: str | None, as_json: bool) -> None:
    """One item with every attempt and the provider's error details."""
    from pipeline.manifest import display

    ledger = _ledger(_settings(config))
    row = ledger.get(item)
    if row is None:
        _fail_usage(f"no item {item}")
    data = {"item": row.id, "batch_id": row.batch_id, "id": row.key, "state": row.state.value,
            "source": display(row.source), "spec": row.spec, "code": row.error_code,
            "message": row.error_message, "detail": row.error_detail,
            "attempts": ledger.attempts_of(row.id)}
    click.echo(json.dumps(data, default=str, ensure_ascii=False, indent=None if as_json else 2))


def _targets(ledger: Any, items: Sequence[str], all_: bool, batch: str | None) -> list[Any]:
    if items:
        rows = [ledger.get(i) for i in items]
        missing = [i for i, r in zip(items, rows, strict=True) if r is None]
        if missing:
            _fail_usage(f"no item {', '.join(missing)}")
        return [r for r in rows if r is not None and r.state.value == "DEAD"]
    if not (all_ or batch):
        _fail_usage("give item ids, --batch B or --all")
    return _dead(ledger, batch)


@dlq.command("replay")
@click.argument("items", nargs=-1)
@click.option("--all", "all_", is_flag=True)
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(items: Sequence[str], all_: bool, batch: str | None, config: str | None,
               as_json: bool) -> None:
    """Give dead items a new attempt."""
    wctx = _worker_ctx(_settings(config))
    ids = [r.id for r in _targets(wctx.ledger, items, all_, batch) if wctx.ledger.restart(r.id)]
    _kick(wctx, ids)
    _echo(as_json, {"replayed": len(ids), "items": ids}, f"{len(ids)} item(s) replayed")


@dlq.command("purge")
@click.argument("items", nargs=-1)
@click.option("--all", "all_", is_flag=True)
@click.option("--batch")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def dlq_purge(items: Sequence[str], all_: bool, batch: str | None, config: str | None,
              as_json: bool) -> None:
    """Take items out of the dead-letter set for good: they become FAILED, error kept."""
    from pipeline.states import ItemState

    ledger = _ledger(_settings(config))
    purged = []
    for row in _targets(ledger, items, all_, batch):
        if ledger.move(row.id, ItemState.DEAD, ItemState.FAILED,
                       error_message=f"{row.error_message} (purged from the dead-letter set)"):
            purged.append(row.id)
            # Reopen the batch: its results.jsonl still says DEAD, and only the sweeper
            # writes it, for batches not marked done.
            ledger.mark_batch_done(row.batch_id, False)
    _echo(as_json, {"purged": len(purged), "items": purged}, f"{len(purged)} item(s) purged")
