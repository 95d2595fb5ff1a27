"""`bulkscribe plan INPUT...`: probe everything, transcribe nothing, say what a run costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pipeline.cli.shared import INPUTS_HELP, cli_settings, read_inputs


def _hms(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@click.command(epilog=INPUTS_HELP + " Remote sources (http, s3, oss) are counted, not fetched.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(["local", "dashscope"]), help="ASR engine.")
@click.option("--model", help="The model a run would use (items may name their own).")
@click.option("--language", help="Language code (checked as `run` would).")
@click.option("--workers", type=click.IntRange(1, 64), help="Workers the run would use.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the probe cache in OUT/.bulkscribe/probe.db, where a `run --out "
    "OUT` finds it (default: the user's cache directory).",
)
@click.option(
    "--manifest-format",
    type=click.Choice(["jsonl", "csv", "list", "dir"]),
    help="Override format detection of a single manifest INPUT.",
)
@click.option("--strict", is_flag=True, help="Unknown manifest fields are bad lines.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(
    inputs: tuple[Path, ...],
    engine: str | None,
    model: str | None,
    language: str | None,
    workers: int | None,
    out_dir: Path | None,
    manifest_format: str | None,
    strict: bool,
    config: str | None,
    as_json: bool,
) -> None:
    """Probe every item of the INPUTs (nothing is transcribed or uploaded) and print files,
    bad files, audio hours per model, cost and the estimated wall time."""
    from pipeline.asr.catalog import Family, model_info
    from pipeline.errors import PipelineError
    from pipeline.log import configure_logging
    from pipeline.planning.plan import Walls, make_plan, probe_all
    from pipeline.planning.pricing import rate_of
    from pipeline.planning.probe_cache import default_cache_path, open_cache
    from pipeline.planning.rtf import local_rtf
    from pipeline.planning.wav_header import header_or_ffprobe
    from pipeline.stages.probe import ffprobe_report

    settings = cli_settings(config, engine=engine, model=model, language=language, workers=workers)
    loaded = read_inputs(inputs, manifest_format, strict, settings)
    configure_logging(level=settings.log_level)
    if out_dir is not None:
        cache_path = out_dir.absolute() / ".bulkscribe" / "probe.db"
    else:
        cache_path = default_cache_path()
    cache = open_cache(cache_path)
    probed = probe_all(
        loaded.entries,
        engine=settings.engine,
        model=settings.model,
        language=settings.language,
        limits=settings.limits,
        reports=cache.reports if cache else header_or_ffprobe(ffprobe_report),
    )
    notes: list[str] = []
    rtfs: dict[str, Any] = {}

    def rtf_of(name: str) -> float | None:
        if name not in rtfs:
            try:
                rtfs[name] = local_rtf(settings, name)
            except PipelineError as exc:  # a model that cannot load: wall time unknown
                rtfs[name] = None
                notes.append(f"{name}: real-time factor unknown ({exc.message})")
                return None
            notes.append(f"{name}: real-time factor {rtfs[name].value:.3f} ({rtfs[name].how})")
        return None if rtfs[name] is None else float(rtfs[name].value)

    def is_local(name: str) -> bool:
        try:
            return model_info(settings.engine, name).family is Family.LOCAL
        except PipelineError:
            return settings.engine == "local"

    walls = Walls(
        local_rtf=rtf_of,
        is_local=is_local,
        workers=settings.workers,
        max_inflight=settings.provider.max_inflight_tasks,
        latency_s=settings.plan.provider_latency_s,
        default_latency_s=settings.plan.default_latency_s,
    )
    result = make_plan(probed, lambda m: rate_of(settings, settings.engine, m), walls)
    notes = [
        *notes,
        *(
            [
                f"probe cache {cache.path}: {cache.hits} cached, {cache.read} read from "
                f"WAV headers, {cache.ran} probed"
            ]
            if cache
            else []
        ),
    ]
    if as_json:
        data = result.as_json()
        data["notes"] = notes
        data["probes"] = {
            "cached": cache.hits if cache else 0,
            "headers": cache.read if cache else 0,
            "ran": cache.ran if cache else len(probed) - result.not_probed,
        }
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    _print_plan(result, notes)


def _print_plan(result: Any, notes: list[str]) -> None:
    echo = click.echo
    echo(f"files: {result.files}  bad: {len(result.bad)}  not probed (remote): {result.not_probed}")
    echo(f"audio: {_hms(result.audio_s)} ({result.audio_s / 3600:.2f} h)")
    for model, t in result.by_model.items():
        cost = (
            "cost unknown (no price for this model in [prices])"
            if t.cost is None
            else f"cost {t.cost:.2f}{' ' + t.currency if t.currency else ''}"
        )
        echo(f"  {model}: {t.files} file(s), {_hms(t.audio_s)}, {cost}")
    wall = "unknown" if result.wall_s is None else f"about {_hms(result.wall_s)}"
    echo(f"estimated wall time: {wall}")
    if result.bad:
        echo("bad files:")
        for p in result.bad:
            echo(f"  {p.id or '-'}  {p.error[0]}  {p.error[1]}")
    if result.remote:
        echo("not probed (remote, not downloaded):")
        for p in result.remote[:20]:
            echo(f"  {p.id}  {p.source}")
        if len(result.remote) > 20:
            echo(f"  ... and {len(result.remote) - 20} more")
    if result.largest:
        echo("largest:")
        for p in result.largest:
            echo(f"  {p.id}  {_hms(p.seconds or 0)}  {p.size_bytes} bytes")
    for note in notes:
        echo(f"note: {note}")
