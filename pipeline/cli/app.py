"""The ``bulkscribe`` command group (``main``) with ``run`` and ``status``; the rest load lazily.

Exit status: 0 when every item succeeded, 1 when any failed, 2 for usage errors (an unusable
INPUT, an unknown option, settings that cannot work: a model that is not here, a missing
key, an output directory that cannot be written), 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from pipeline.cli.shared import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    INPUTS_HELP,
    checked_notify_urls,
    cli_settings,
    fail_usage,
    intake_options,
    ledger_url,
    read_inputs,
    run_caps,
)
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    pass


class SetupError(click.ClickException):
    """A setup problem found before any file is touched: one line, exit 2."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the cause wrote


def _check_setup(settings: Any) -> None:
    """The engine, model and credentials, before the first file (``--out`` is checked when
    it is opened: :func:`pipeline.outputs.outdir.open_out_dir`)."""
    from pipeline.wiring import preflight

    try:
        preflight(settings)
    except PipelineError as exc:
        raise SetupError(exc.message) from None


def engine_options(command: Any) -> Any:
    """The local engine's knobs and the subtitle layout, as options of ``run``."""
    options = [
        click.option(
            "--beam-size",
            type=click.IntRange(1, 20),
            help="Beam search width (default 5; 1 is greedy: faster, less accurate).",
        ),
        click.option("--device", help="cpu (default), cuda or auto."),
        click.option(
            "--compute-type",
            help="CTranslate2 compute type: int8 (default), "
            "int8_float32, float32, float16 (GPU), ...",
        ),
        click.option(
            "--threads",
            type=click.IntRange(0, 256),
            help="CPU threads per model (default 0: cores / workers).",
        ),
        click.option(
            "--vad/--no-vad", "vad", default=None, help="Drop silence before decoding (default on)."
        ),
        click.option(
            "--context",
            help="Initial prompt: names and terms to expect; an item's own context wins.",
        ),
        click.option("--hotwords", help="Words to favour; an item's own hotwords win."),
        click.option(
            "--task",
            type=click.Choice(["transcribe", "translate"]),
            help="translate: speech in any language to English text (needs a "
            "multilingual model such as base).",
        ),
        click.option(
            "--max-line-width",
            type=click.IntRange(10, 200),
            help="Subtitle line length in characters (default 42).",
        ),
        click.option(
            "--max-line-count",
            type=click.IntRange(1, 10),
            help="Lines per subtitle cue (default 2).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_settings(
    beam_size: int | None = None,
    device: str | None = None,
    compute_type: str | None = None,
    threads: int | None = None,
    vad: bool | None = None,
    context: str | None = None,
    hotwords: str | None = None,
    task: str | None = None,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
) -> dict[str, Any]:
    """The settings those options set (only the ones given)."""
    local = {
        k: v
        for k, v in (
            ("beam_size", beam_size),
            ("device", device),
            ("compute_type", compute_type),
            ("cpu_threads", threads),
            ("vad_filter", vad),
            ("context", context),
            ("hotwords", hotwords),
            ("task", task),
        )
        if v is not None
    }
    subtitles = {
        k: v
        for k, v in (("max_line_width", max_line_width), ("max_line_count", max_line_count))
        if v is not None
    }
    return {"local": local or None, "subtitles": subtitles or None}


class LazyGroup(click.Group):
    """Subcommands that live in other modules are imported only when invoked, so
    ``bulkscribe run`` does not pay for Celery or the emulator's web stack, and ``--help``
    lists them from the one-line summaries here instead of importing them."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "emulator": (
            "pipeline.emulator.cli:emulator",
            "Serve a DashScope-compatible API backed by the local engine.",
        ),
        "submit": (
            "pipeline.cli.ops:submit",
            "Queue a MANIFEST for the workers; prints the batch id.",
        ),
        "worker": ("pipeline.cli.ops:worker", "Run a Celery worker on the given queues."),
        "beat": (
            "pipeline.cli.ops:beat",
            "Run the scheduler: the sweeper and the configured schedules.",
        ),
        "retry": ("pipeline.cli.ops:retry", "Give a batch's FAILED and DEAD items a new attempt."),
        "reprocess": (
            "pipeline.cli.ops:reprocess",
            "New attempts for a batch, some items, or items in a state.",
        ),
        "dlq": (
            "pipeline.cli.ops:dlq",
            "The dead-letter set: items whose retries ran out (state DEAD).",
        ),
        "notify": (
            "pipeline.notify.cli:notify",
            "Webhook notifications: list the outbox, send again.",
        ),
        "cancel": (
            "pipeline.cli.ops:cancel",
            "Cancel a batch: nothing more is submitted, its items end CANCELLED.",
        ),
        "console": (
            "pipeline.console.cli:console",
            "Serve the operator console: batches, items, actions, live counts.",
        ),
        "plan": (
            "pipeline.cli.plan:plan",
            "Probe INPUTs and estimate audio hours, cost and wall time; nothing is sent.",
        ),
        "gc": (
            "pipeline.cli.gc:gc",
            "Delete finished batches' item and attempt rows, keeping their totals.",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name][0].split(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            elif (command := super().get_command(ctx, name)) is not None:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkscribe")
def main() -> None:
    """Turn archives of audio and video into text."""


def _scratch_root(base: str | os.PathLike[str] | None, out_dir: Path | None = None) -> Path:
    """This run's scratch directory; those of runs that died (kill -9) are removed first.
    Inside ``--out`` no component of it may be a link (see :mod:`pipeline.outputs.outdir`)."""
    from pipeline.outputs.outdir import OutDirRefused, check_no_links_below

    root = Path(base or tempfile.gettempdir()).absolute()
    if out_dir is not None:
        try:
            check_no_links_below(out_dir, root)
        except OutDirRefused as exc:
            fail_usage(str(exc))
    for stale in root.glob("bulkscribe-run-*"):
        try:
            pid = int(stale.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"bulkscribe-run-{os.getpid()}-", dir=root))
    except OSError as exc:
        fail_usage(
            f"cannot make a scratch directory in {root}: [Errno {exc.errno}] "
            f"{exc.strerror}; set BULKSCRIBE_SCRATCH_DIR to a directory you can write to"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _out_dir_lock(out_dir: Path) -> Iterator[None]:
    """One run per output directory: a second one would fight over the same files.

    Also where ``--out`` is checked before any item is touched: it must be a directory this
    user can write, and nothing the run keeps there may be a planted link (a usage error
    otherwise; see :mod:`pipeline.outputs.outdir`).
    """
    from pipeline.outputs.outdir import (
        LOG_FILE,
        STATE_DIR,
        OutDirRefused,
        check_entry,
        check_state_files,
        open_out_dir,
        open_regular,
        open_state_dir,
    )

    with contextlib.ExitStack() as held:
        try:
            out_fd = open_out_dir(out_dir)
            held.callback(os.close, out_fd)
            state_fd = open_state_dir(out_fd, out_dir)
            held.callback(os.close, state_fd)
            lock_fd = open_regular(
                "lock",
                os.O_RDWR | os.O_CREAT,
                dir_fd=state_fd,
                shown=out_dir / STATE_DIR / "lock",
                mode=0o600,
            )
        except OutDirRefused as exc:
            fail_usage(str(exc))
        f = held.enter_context(os.fdopen(lock_fd, "r+"))
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "another process"
            fail_usage(f"{out_dir} is in use by another bulkscribe run ({holder})")
        try:  # checked under the lock: no other run is creating them now
            check_state_files(state_fd, out_dir)
            check_entry(LOG_FILE, out_fd, out_dir / LOG_FILE)
        except OutDirRefused as exc:
            fail_usage(str(exc))
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield


def _check_state(out_dir: Path) -> None:
    """``status --out``: refuse a state dir with planted links before SQLite opens it."""
    from pipeline.outputs.outdir import OutDirRefused, check_existing

    try:
        check_existing(out_dir)
    except OutDirRefused as exc:
        fail_usage(str(exc))


def _pg_status(url: str, batch_id: str) -> dict[str, Any] | None:
    """The report read through psycopg alone (no SQLAlchemy to import); None when the
    ledger is not PostgreSQL, not migrated that far, or has no such batch (the full path
    then migrates it, or says so)."""
    from pipeline.outputs.report_pg import is_postgres

    if not is_postgres(url):
        return None
    from pipeline.outputs.report import status_report
    from pipeline.outputs.report_pg import pg_reads

    with pg_reads(url) as reads:
        return status_report(reads, batch_id) if reads.ready() else None


@contextlib.contextmanager
def _removed_after(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _log_warnings(loaded: Any) -> None:
    from pipeline.log import get_logger

    for warning in loaded.warnings:
        # info: stderr already has it (above); the log file keeps everything
        get_logger("bulkscribe.manifest").info("manifest.warning", message=warning)


@main.command(epilog=INPUTS_HELP)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    default="transcripts",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory: transcripts, results.jsonl, the log and the ledger.",
)
@click.option("--engine", type=click.Choice(["local", "dashscope"]), help="ASR engine.")
@click.option(
    "--model",
    help="tiny.en (default), base, a model directory, or a faster-whisper "
    "name already in the download cache (see local.allow_download); DashScope: "
    "fun-asr, qwen3-asr-flash-filetrans, ...",
)
@click.option("--language", help="Language code, e.g. en, zh (default: detect).")
@click.option("--workers", type=click.IntRange(1, 64), help="Items processed at once.")
@click.option(
    "--formats", help="Comma-separated: json,txt,srt,vtt,tsv (default: json,txt,srt,vtt)."
)
@click.option("--force", is_flag=True, help="Transcribe finished items again.")
@click.option("--retry-failed", is_flag=True, help="Try permanently failed items again.")
@intake_options(notify_help="Send signed webhooks (batch.completed) here; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-v, -vv).")
@engine_options
def run(
    inputs: tuple[Path, ...],
    out_dir: Path,
    engine: str | None,
    model: str | None,
    language: str | None,
    workers: int | None,
    formats: str | None,
    force: bool,
    retry_failed: bool,
    manifest_format: str | None,
    strict: bool,
    max_audio_hours: float | None,
    max_cost: float | None,
    config: str | None,
    notify_urls: tuple[str, ...],
    as_json: bool,
    verbose: int,
    **knobs: Any,
) -> None:
    """Transcribe every item of the INPUTs on this machine into --out."""
    from pipeline.asr.catalog import model_info
    from pipeline.flow.outputs import DirSink, cue_layout
    from pipeline.ledger import open_ledger
    from pipeline.log import configure_logging
    from pipeline.notify.hooks import embedded_close
    from pipeline.notify.hooks import flush as notify_flush
    from pipeline.runner import EmbeddedRunner, RunConfig
    from pipeline.wiring import build_context, http_client, media_store

    settings = cli_settings(
        config,
        engine=engine,
        model=model,
        language=language,
        workers=workers,
        formats=formats,
        **engine_settings(**knobs),
    )
    out_dir = out_dir.absolute()
    notify_urls = checked_notify_urls(notify_urls, settings)
    loaded = read_inputs(inputs, manifest_format, strict, settings)
    _check_setup(settings)
    models = [settings.model, *(e.model for e in loaded.items if e.model)]
    caps, currency = run_caps(settings, models, max_audio_hours, max_cost)
    level = {0: settings.log_level, 1: "info"}.get(verbose, "debug")
    scratch = _scratch_root(settings.scratch_dir, out_dir)
    with _removed_after(scratch), _out_dir_lock(out_dir), http_client(settings) as http:
        configure_logging(level=level, json_file=out_dir / "bulkscribe.log")
        _log_warnings(loaded)
        try:
            info = model_info(settings.engine, settings.model, settings.limits)
            sink = DirSink(out_dir, cue_layout(settings.subtitles))
            ctx = build_context(
                settings,
                ledger=open_ledger(ledger_url(settings, out_dir)),
                owner=f"run:{os.getpid()}",
                sinks=lambda _batch: sink,
                scratch=scratch,
                store=media_store(settings, out_dir / ".bulkscribe" / "media"),
                http=http,
                dead_letters=False,
                **_probe_cache(out_dir),
            )
        except PipelineError as exc:
            fail_usage(exc.message)
        engine_check = (
            getattr(ctx.clip_engine(info), "check", None) if info.mode.value == "clip" else None
        )
        runner = EmbeddedRunner(
            cfg=RunConfig(
                out_dir=out_dir,
                engine=settings.engine,
                model=settings.model,
                language=settings.language,
                formats=settings.formats,
                workers=settings.workers,
                retry=settings.retry,
                force=force,
                retry_failed=retry_failed,
                budget=caps,
                currency=currency,
            ),
            ctx=ctx,
            progress=_progress(as_json),
            check_engine=engine_check,
            batch_size=settings.provider.batch_size,
            on_complete=embedded_close(ctx.ledger.engine, settings, notify_urls, out_dir),
        )
        try:
            summary = runner.run(loaded)
        except PipelineError as exc:  # the engine check once work is found (hash, load)
            raise SetupError(exc.message) from None
        if not summary.interrupted:
            notify_flush(settings, ctx.ledger.engine)  # bounded by notify.flush_s
    if summary.interrupted:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)  # worker threads may still be inside a model call
    _print_summary(summary, out_dir, as_json)
    sys.exit(0 if summary.ok else EXIT_FAILED)


def _probe_cache(out_dir: Path) -> dict[str, Any]:
    """The prober a run uses: ffprobe behind the probe cache a `plan` filled (under
    --out when it made one there, else the user's), so files are not probed twice."""
    from functools import partial

    from pipeline.planning.probe_cache import cache_path_for, open_cache
    from pipeline.stages.probe import probe

    cache = open_cache(cache_path_for(out_dir))
    return {"prober": partial(probe, reports=cache.reports)} if cache else {}


def _progress(as_json: bool) -> Any:
    from rich.console import Console

    from pipeline.cli.progress import PlainProgress, RichProgress

    if sys.stderr.isatty() and not as_json:
        return RichProgress(Console(stderr=True))
    return PlainProgress()


def _print_summary(summary: Any, out_dir: Path, as_json: bool) -> None:
    counts = summary.counts
    failed = [r for r in summary.results if r.status != "SUCCEEDED"]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(out_dir),
                    "total": len(summary.results),
                    "counts": counts,
                    "processed": summary.processed,
                    "elapsed_s": round(summary.elapsed_s, 3),
                    "audio_s": round(summary.audio_s, 3),
                    "results": str(out_dir / "results.jsonl"),
                    "failed": [{"id": r.id, "source": r.source, **(r.error or {})} for r in failed],
                },
                ensure_ascii=False,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]bulkscribe[/]: {len(summary.results)} item(s) in {out_dir}")
    table = Table()
    table.add_column("status")
    table.add_column("items", justify="right")
    for status in ("SUCCEEDED", "FAILED", *(("SKIPPED",) if counts.get("SKIPPED") else ())):
        table.add_row(status, str(counts.get(status, 0)))
    console.print(table)
    if failed:
        fail_table = Table()
        for col in ("id", "code", "message"):
            fail_table.add_column(col, overflow="fold")
        for r in failed[:50]:
            fail_table.add_row(
                r.id or "-", (r.error or {}).get("code", ""), (r.error or {}).get("message", "")
            )
        console.print(fail_table)
        if len(failed) > 50:
            console.print(f"... and {len(failed) - 50} more in results.jsonl")
    rate = f", {summary.audio_s / summary.elapsed_s:.1f}x real time" if summary.audio_s else ""
    console.print(
        f"{summary.processed} processed in {summary.elapsed_s:.1f} s{rate}; "
        f"results in {out_dir / 'results.jsonl'}"
    )


@main.command()
@click.argument("batch", required=False)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Output directory of an embedded run.",
)
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(batch: str | None, out_dir: Path | None, config: str | None, as_json: bool) -> None:
    """Show where a run (--out DIR) or a distributed BATCH stands."""
    from pipeline.outputs.report import batch_status, render_status

    settings = cli_settings(config)
    if out_dir is None and batch is None:
        fail_usage("give a BATCH id or --out DIR")
    if out_dir is not None:
        out_dir = out_dir.absolute()
        _check_state(out_dir)
        url = ledger_url(settings, out_dir)
        if not settings.database_url and not (out_dir / ".bulkscribe" / "ledger.db").is_file():
            fail_usage(f"{out_dir} holds no bulkscribe run")
        from pipeline.inputs.batches import batch_id_for  # the manifest reader: not for a BATCH

        batch = batch_id_for(out_dir)
    else:
        if not settings.database_url:
            fail_usage("set BULKSCRIBE_DATABASE_URL for batch status")
        url = settings.database_url
    report = _pg_status(url, str(batch))
    if report is None:
        from pipeline.ledger import open_ledger

        report = batch_status(open_ledger(url), str(batch))
    if report is None:
        fail_usage(f"no batch {batch}")
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, default=str))
    else:
        render_status(report)
