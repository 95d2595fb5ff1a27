"""``bulkscribe emulator``: serve the DashScope-compatible API until interrupted."""

from __future__ import annotations

import click

from pipeline.emulator.config import ConfigInvalid, EmulatorConfig

_RATE = click.FloatRange(0.0, 1.0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    envvar="BULKSCRIBE_EMULATOR_API_KEY",
    help="Require this Bearer key on every route (default: accept any); result "
    "URLs are then presigned.",
)
@click.option(
    "--latency-s",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Minimum time a task spends RUNNING.",
)
@click.option(
    "--max-concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Tasks RUNNING at once; the rest wait PENDING in FIFO order.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the fault draws: same seed, same faults.",
)
@click.option("--fail-rate", default=0.0, type=_RATE, help="Share of tasks that end FAILED.")
@click.option(
    "--throttle-rate",
    default=0.0,
    type=_RATE,
    help="Share of API requests answered 429 Throttling (before any side effect).",
)
@click.option(
    "--error-rate",
    default=0.0,
    type=_RATE,
    help="Share of API requests answered 500 InternalError (before any side effect).",
)
@click.option(
    "--lost-rate",
    default=0.0,
    type=_RATE,
    help="Share of tasks that answer UNKNOWN once they would have finished.",
)
@click.option(
    "--stuck-rate",
    default=0.0,
    type=_RATE,
    help="Share of tasks that stay RUNNING until they expire.",
)
@click.option(
    "--task-ttl-s",
    default=86_400.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="How long tasks and result URLs live after a task ends.",
)
@click.option(
    "--submit-delay-s",
    default=0.0,
    type=click.FloatRange(0),
    help="Test hook: hold each submit answer back this long after the task exists.",
)
@click.option(
    "--result-delay-s",
    default=0.0,
    type=click.FloatRange(0),
    help="Test hook: hold each result document back this long.",
)
@click.option(
    "--model",
    default="tiny.en",
    show_default=True,
    help="Local faster-whisper model behind every DashScope model name.",
)
@click.option(
    "--public-url", help="Base URL for result and upload URLs (default: the URL each client used)."
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Transcription threads per pool (async tasks, sync calls).",
)
@click.option(
    "--download-deadline-s",
    default=EmulatorConfig().download_deadline_s,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Wall-clock limit of one file download, however slowly the server sends.",
)
@click.option(
    "--allow-private/--no-allow-private",
    default=True,
    show_default=True,
    help="Fetch file URLs on private and loopback addresses (link-local and cloud "
    "metadata addresses are refused either way).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option("--access-log", is_flag=True, help="Log every HTTP request.")
def emulator(
    host: str,
    port: int,
    api_key: str | None,
    latency_s: float,
    max_concurrency: int,
    seed: int,
    fail_rate: float,
    throttle_rate: float,
    error_rate: float,
    lost_rate: float,
    stuck_rate: float,
    task_ttl_s: float,
    submit_delay_s: float,
    result_delay_s: float,
    model: str,
    public_url: str | None,
    workers: int,
    download_deadline_s: float,
    allow_private: bool,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve a DashScope-compatible API (Fun-ASR, Qwen ASR, uploads) backed by the local engine."""
    import uvicorn

    from pipeline.emulator.app import create_app
    from pipeline.log import configure_logging

    try:
        config = EmulatorConfig(
            api_key=api_key or None,  # an empty BULKSCRIBE_EMULATOR_API_KEY means none
            latency_s=latency_s,
            max_concurrency=max_concurrency,
            seed=seed,
            fail_rate=fail_rate,
            throttle_rate=throttle_rate,
            error_rate=error_rate,
            lost_rate=lost_rate,
            stuck_rate=stuck_rate,
            task_ttl_s=task_ttl_s,
            submit_delay_s=submit_delay_s,
            result_delay_s=result_delay_s,
            model=model,
            public_url=public_url.rstrip("/") if public_url else None,
            workers=workers,
            download_deadline_s=download_deadline_s,
            allow_private=allow_private,
        )
    except ConfigInvalid as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(level=log_level)
    click.echo(
        f"bulkscribe emulator on http://{host}:{port} "
        f"(native: /api/v1, compatible: /compatible-mode/v1)",
        err=True,
    )
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
    )
