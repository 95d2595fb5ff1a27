"""What the ``bulkscribe`` commands share: exit statuses, usage errors, settings and INPUTs
read at the edge, the ledger an ``--out`` holds, budget and notification options.

Every command module (``app``, ``ops``, ``plan``, ``gc``, the console's and notify's) imports
these from here, not each other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from pydantic import ValidationError

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "INPUTS_HELP",
    "BadInput",
    "budget_options",
    "checked_notify_urls",
    "cli_settings",
    "fail_usage",
    "ledger_url",
    "read_inputs",
    "run_caps",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail_usage(message: str) -> NoReturn:
    raise click.UsageError(message)


class BadInput(click.ClickException):
    """An INPUT that cannot be used: one ``Error: ...`` line, exit 2, nothing written."""

    exit_code = EXIT_USAGE


def cli_settings(config: str | None, **flags: Any) -> Settings:
    from pydantic_settings import SettingsError

    from pipeline.settings import ConfigFileMissing, load_settings

    try:
        return load_settings(config, **flags)
    except (ValidationError, ConfigFileMissing, SettingsError) as exc:
        fail_usage(f"invalid settings: {exc}")


def ledger_url(settings: Any, out_dir: Path) -> str:
    if settings.database_url:  # without importing the ledger (SQLAlchemy): status's path
        return str(settings.database_url)
    from pipeline.ledger import sqlite_url
    from pipeline.outputs.outdir import LEDGER_FILE, STATE_DIR

    return sqlite_url(out_dir / STATE_DIR / LEDGER_FILE)


def budget_options(fn: Any) -> Any:
    """--max-audio-hours and --max-cost, shared by run, submit and retry."""
    fn = click.option(
        "--max-cost",
        type=click.FloatRange(min=0),
        help="Admit items in manifest order while their cost (from the "
        "[prices] table) stays within this; the rest are SKIPPED.",
    )(fn)
    return click.option(
        "--max-audio-hours",
        type=click.FloatRange(min=0, min_open=True),
        help="Admit items in manifest order while their audio stays within "
        "this many hours; the rest are SKIPPED (budget_exceeded).",
    )(fn)


def run_caps(
    settings: Any,
    models: Any,
    max_audio_hours: float | None,
    max_cost: float | None,
    *,
    others: bool = False,
) -> Any:
    """The budget caps for items of these models (flags over settings); exit 2 when
    --max-cost has no price for one of them. ``others``: price the rest of the table too."""
    from pipeline.planning.pricing import budget_caps

    try:
        return budget_caps(
            settings,
            settings.engine,
            models,
            max_audio_hours=max_audio_hours,
            max_cost=max_cost,
            others=others,
        )
    except PipelineError as exc:
        fail_usage(exc.message)


def intake_options(*, notify_help: str) -> Callable[[Any], Any]:
    """The options ``run`` and ``submit`` share: how the manifest is read, the budget caps,
    the settings file and the webhooks."""
    options: list[Callable[[Any], Any]] = [
        click.option(
            "--manifest-format",
            type=click.Choice(["jsonl", "csv", "list", "dir"]),
            help="Override format detection of a single manifest INPUT.",
        ),
        click.option(
            "--strict",
            is_flag=True,
            help="Unknown manifest fields fail their lines (manifest_invalid), not warn.",
        ),
        budget_options,
        click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file."),
        click.option("--notify", "notify_urls", multiple=True, metavar="URL", help=notify_help),
    ]

    def apply(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


INPUTS_HELP = (
    "Each INPUT is a media file (one item), a directory (walked for media files, "
    "its tree mirrored under --out) or a manifest (JSONL, CSV or a list of sources)."
)


def read_inputs(
    inputs: tuple[Path, ...], manifest_format: str | None, strict: bool, settings: Any
) -> Any:
    """Every INPUT read before --out is locked or written: an unusable one is exit 2.
    Warnings (unknown fields) go to stderr here and to the log once it is open."""
    from pipeline.inputs.manifest import ManifestUnreadable, load_inputs

    try:
        loaded = load_inputs(
            inputs, fmt=manifest_format, strict=strict, max_bytes=settings.manifest.max_bytes
        )
    except ManifestUnreadable as exc:
        raise BadInput(str(exc)) from None
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    return loaded


def checked_notify_urls(flags: tuple[str, ...], settings: Any) -> tuple[str, ...]:
    from pipeline.notify.hooks import checked_urls

    try:
        return checked_urls(flags, settings)
    except ValueError as exc:
        fail_usage(str(exc))
