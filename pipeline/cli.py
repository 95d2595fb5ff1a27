"""The ``bulkscribe`` command line.

Exit status: 0 when every item succeeded, 1 when any failed, 2 for usage errors (a missing
manifest, an unknown option, settings that cannot work), 130 when interrupted.
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
from typing import Any, ClassVar, NoReturn

import click
from pydantic import ValidationError

from pipeline.errors import PipelineError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail_usage(message: str) -> NoReturn:
    raise click.UsageError(message)


class LazyGroup(click.Group):
    """Subcommands that live in other modules are imported only when invoked, so
    ``bulkscribe run`` does not pay for Celery or the emulator's web stack."""

    lazy: ClassVar[dict[str, str]] = {
        "emulator": "pipeline.emulator.cli:emulator",
        "submit": "pipeline.cli_ops:submit",
        "worker": "pipeline.cli_ops:worker",
        "beat": "pipeline.cli_ops:beat",
        "retry": "pipeline.cli_ops:retry",
        "reprocess": "pipeline.cli_ops:reprocess",
        "dlq": "pipeline.cli_ops:dlq",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkscribe")
def main() -> None:
    """Turn archives of audio and video into text."""


def _settings(config: str | None, **flags: Any) -> Any:
    from pydantic_settings import SettingsError

    from pipeline.settings import ConfigFileMissing, load_settings

    try:
        return load_settings(config, **flags)
    except (ValidationError, ConfigFileMissing, SettingsError) as exc:
        _fail_usage(f"invalid settings: {exc}")


def _scratch_root(base: str | os.PathLike[str] | None, out_dir: Path | None = None) -> Path:
    """This run's scratch directory; those of runs that died (kill -9) are removed first.
    Inside ``--out`` no component of it may be a link (see :mod:`pipeline.outdir`)."""
    from pipeline.outdir import OutDirRefused, check_no_links_below

    root = Path(base or tempfile.gettempdir()).absolute()
    if out_dir is not None:
        try:
            check_no_links_below(out_dir, root)
        except OutDirRefused as exc:
            _fail_usage(str(exc))
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
        _fail_usage(f"cannot make a scratch directory in {root}: [Errno {exc.errno}] "
                    f"{exc.strerror}; set BULKSCRIBE_SCRATCH_DIR to a directory you can write to")


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
    otherwise; see :mod:`pipeline.outdir`).
    """
    from pipeline.outdir import (
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
            lock_fd = open_regular("lock", os.O_RDWR | os.O_CREAT, dir_fd=state_fd,
                                   shown=out_dir / STATE_DIR / "lock", mode=0o600)
        except OutDirRefused as exc:
            _fail_usage(str(exc))
        f = held.enter_context(os.fdopen(lock_fd, "r+"))
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "another process"
            _fail_usage(f"{out_dir} is in use by another bulkscribe run ({holder})")
        try:  # checked under the lock: no other run is creating them now
            check_state_files(state_fd, out_dir)
            check_entry(LOG_FILE, out_fd, out_dir / LOG_FILE)
        except OutDirRefused as exc:
            _fail_usage(str(exc))
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield


def _check_state(out_dir: Path) -> None:
    """``status --out``: refuse a state dir with planted links before SQLite opens it."""
    from pipeline.outdir import OutDirRefused, check_existing

    try:
        check_existing(out_dir)
    except OutDirRefused as exc:
        _fail_usage(str(exc))


def ledger_url(settings: Any, out_dir: Path) -> str:
    from pipeline.ledger import sqlite_url
    from pipeline.outdir import LEDGER_FILE, STATE_DIR

    return settings.database_url or sqlite_url(out_dir / STATE_DIR / LEDGER_FILE)


@contextlib.contextmanager
def _removed_after(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


@main.command()
@click.argument("manifest", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory: transcripts, results.jsonl, the log and the ledger.")
@click.option("--engine", type=click.Choice(["local", "dashscope"]), help="ASR engine.")
@click.option("--model", help="tiny.en (default), base, another faster-whisper name or a "
              "model directory; DashScope: fun-asr, qwen3-asr-flash-filetrans, ...")
@click.option("--language", help="Language code, e.g. en, zh (default: detect).")
@click.option("--workers", type=click.IntRange(1, 64), help="Items processed at once.")
@click.option("--formats", help="Comma-separated: json,txt,srt,vtt (default: all).")
@click.option("--force", is_flag=True, help="Transcribe finished items again.")
@click.option("--retry-failed", is_flag=True, help="Try permanently failed items again.")
@click.option("--manifest-format", type=click.Choice(["jsonl", "csv", "list", "dir"]),
              help="Override manifest format detection.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-v, -vv).")
def run(manifest: Path, out_dir: Path, engine: str | None, model: str | None,
        language: str | None, workers: int | None, formats: str | None, force: bool,
        retry_failed: bool, manifest_format: str | None, config: str | None, as_json: bool,
        verbose: int) -> None:
    """Transcribe every item of MANIFEST on this machine into --out."""
    from pipeline.asr.catalog import model_info
    from pipeline.flow.outputs import DirSink
    from pipeline.ledger import open_ledger
    from pipeline.log import configure_logging
    from pipeline.manifest import ManifestUnreadable, load_manifest
    from pipeline.runner import EmbeddedRunner, RunConfig
    from pipeline.wiring import build_context, http_client, media_store

    settings = _settings(config, engine=engine, model=model, language=language,
                         workers=workers, formats=formats)
    out_dir = out_dir.absolute()
    level = {0: settings.log_level, 1: "info"}.get(verbose, "debug")
    scratch = _scratch_root(settings.scratch_dir, out_dir)
    with _removed_after(scratch), _out_dir_lock(out_dir), \
            http_client(settings) as http:
        configure_logging(level=level, json_file=out_dir / "bulkscribe.log")
        try:
            loaded = load_manifest(manifest, fmt=manifest_format)
            info = model_info(settings.engine, settings.model, settings.limits)
            sink = DirSink(out_dir)
            ctx = build_context(
                settings, ledger=open_ledger(ledger_url(settings, out_dir)),
                owner=f"run:{os.getpid()}", sinks=lambda _batch: sink, scratch=scratch,
                store=media_store(settings, out_dir / ".bulkscribe" / "media"), http=http,
                dead_letters=False)
        except ManifestUnreadable as exc:
            _fail_usage(str(exc))
        except PipelineError as exc:
            _fail_usage(exc.message)
        engine_check = getattr(ctx.clip_engine(info), "check", None) \
            if info.mode.value == "clip" else None
        runner = EmbeddedRunner(
            cfg=RunConfig(out_dir=out_dir, engine=settings.engine, model=settings.model,
                          language=settings.language, formats=settings.formats,
                          workers=settings.workers, retry=settings.retry, force=force,
                          retry_failed=retry_failed),
            ctx=ctx, progress=_progress(as_json), check_engine=engine_check,
            batch_size=settings.provider.batch_size)
        try:
            summary = runner.run(loaded)
        except PipelineError as exc:
            _fail_usage(exc.message)
    if summary.interrupted:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)  # worker threads may still be inside a model call
    _print_summary(summary, out_dir, as_json)
    sys.exit(0 if summary.ok else EXIT_FAILED)


def _progress(as_json: bool) -> Any:
    from rich.console import Console

    from pipeline.progress import PlainProgress, RichProgress

    if sys.stderr.isatty() and not as_json:
        return RichProgress(Console(stderr=True))
    return PlainProgress()


def _print_summary(summary: Any, out_dir: Path, as_json: bool) -> None:
    counts = summary.counts
    failed = [r for r in summary.results if r.status != "SUCCEEDED"]
    if as_json:
        click.echo(json.dumps({
            "out": str(out_dir), "total": len(summary.results), "counts": counts,
            "processed": summary.processed, "elapsed_s": round(summary.elapsed_s, 3),
            "audio_s": round(summary.audio_s, 3),
            "results": str(out_dir / "results.jsonl"),
            "failed": [{"id": r.id, "source": r.source, **(r.error or {})} for r in failed],
        }, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]bulkscribe[/]: {len(summary.results)} item(s) in {out_dir}")
    table = Table()
    table.add_column("status")
    table.add_column("items", justify="right")
    for status in ("SUCCEEDED", "FAILED"):
        table.add_row(status, str(counts.get(status, 0)))
    console.print(table)
    if failed:
        fail_table = Table()
        for col in ("id", "code", "message"):
            fail_table.add_column(col, overflow="fold")
        for r in failed[:50]:
            fail_table.add_row(r.id or "-", (r.error or {}).get("code", ""),
                               (r.error or {}).get("message", ""))
        console.print(fail_table)
        if len(failed) > 50:
            console.print(f"... and {len(failed) - 50} more in results.jsonl")
    rate = f", {summary.audio_s / summary.elapsed_s:.1f}x real time" if summary.audio_s else ""
    console.print(f"{summary.processed} processed in {summary.elapsed_s:.1f} s{rate}; "
                  f"results in {out_dir / 'results.jsonl'}")


@main.command()
@click.argument("batch", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Output directory of an embedded run.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(batch: str | None, out_dir: Path | None, config: str | None, as_json: bool) -> None:
    """Show where a run (--out DIR) or a distributed BATCH stands."""
    from pipeline.ledger import open_ledger
    from pipeline.report import batch_status, render_status
    from pipeline.runner import batch_id_for

    settings = _settings(config)
    if out_dir is None and batch is None:
        _fail_usage("give a BATCH id or --out DIR")
    if out_dir is not None:
        out_dir = out_dir.absolute()
        _check_state(out_dir)
        url = ledger_url(settings, out_dir)
        if not settings.database_url and not (out_dir / ".bulkscribe" / "ledger.db").is_file():
            _fail_usage(f"{out_dir} holds no bulkscribe run")
        batch = batch_id_for(out_dir)
    else:
        if not settings.database_url:
            _fail_usage("set BULKSCRIBE_DATABASE_URL for batch status")
        url = settings.database_url
    ledger = open_ledger(url)
    report = batch_status(ledger, str(batch))
    if report is None:
        _fail_usage(f"no batch {batch}")
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, default=str))
    else:
        render_status(report)
