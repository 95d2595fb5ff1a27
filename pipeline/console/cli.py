"""``bulkscribe console``: serve the console over an embedded run's or the fleet's ledger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.cli.shared import EXIT_USAGE, cli_settings, fail_usage


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Output directory of an embedded run (default: the fleet's ledger, "
    "BULKSCRIBE_DATABASE_URL).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; without BULKSCRIBE_CONSOLE_TOKEN only a loopback one.",
)
@click.option("--port", default=8400, show_default=True, type=click.IntRange(0, 65535))
@click.option("--config", type=click.Path(dir_okay=False))
def console(out_dir: Path | None, host: str, port: int, config: str | None) -> None:
    """Web console and JSON API: batches, items, transcripts, actions, live progress."""
    import uvicorn

    from pipeline.console import auth
    from pipeline.console.app import Console, create_app
    from pipeline.ledger import open_ledger
    from pipeline.log import configure_logging

    settings = cli_settings(config)
    configure_logging(level=settings.log_level)
    token = settings.console_token.get_secret_value() if settings.console_token else None
    readonly = (
        settings.console_readonly_token.get_secret_value()
        if settings.console_readonly_token
        else None
    )
    if readonly and not token:
        fail_usage("BULKSCRIBE_CONSOLE_READONLY_TOKEN needs BULKSCRIBE_CONSOLE_TOKEN too")
    if token is None and not auth.is_loopback(host):
        click.echo(
            f"Error: refusing to serve on {host} without a token: set "
            "BULKSCRIBE_CONSOLE_TOKEN, or listen on 127.0.0.1",
            err=True,
        )
        raise SystemExit(EXIT_USAGE)
    if out_dir is not None:
        from pipeline.cli.shared import ledger_url

        out_dir = out_dir.absolute()
        if not settings.database_url and not (out_dir / ".bulkscribe" / "ledger.db").is_file():
            fail_usage(f"{out_dir} holds no bulkscribe run")
        url = ledger_url(settings, out_dir)
    elif settings.database_url:
        url = settings.database_url
    else:
        fail_usage("give --out DIR, or set BULKSCRIBE_DATABASE_URL for the fleet's ledger")
    from pipeline.cli.ops import provider_canceller

    with provider_canceller(settings) as cancel_task:
        app = create_app(
            Console(
                ledger=open_ledger(url),
                settings=settings,
                access=auth.Access.build(token, readonly),
                out_dir=out_dir,
                cancel_task=cancel_task,
                store_for=_store_for(settings),
            )
        )
        click.echo(f"bulkscribe console on http://{host}:{port}/", err=True)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,  # open live pages (SSE) do not hold a restart up
        )


def _store_for(settings: Any) -> Callable[[str], Any]:
    """Opens the store of an s3:// or oss:// URL (transcripts under a remote --out, audio)."""
    from pipeline.storage import open_store

    return lambda url: open_store(url, endpoint_url=settings.s3_endpoint_url)
