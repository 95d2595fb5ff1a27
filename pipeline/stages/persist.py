"""Persist: the result document and its renderings, written where the user asked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.models import ProbeResult
from pipeline.outputs.render import write_outputs
from pipeline.outputs.transcript import AudioProperties, Transcript, to_result_document


def audio_properties(probe: ProbeResult) -> AudioProperties:
    return AudioProperties(
        audio_format=probe.codec,
        channels=tuple(range(probe.channels)),
        original_sampling_rate=probe.sample_rate,
        original_duration_ms=int(round(probe.duration_s * 1000)),
    )


def build_document(
    file_url: str, probe: ProbeResult, transcripts: Sequence[Transcript]
) -> dict[str, Any]:
    return to_result_document(file_url, audio_properties(probe), transcripts)


def persist_local(
    out_dir: Path,
    key: str,
    document: Mapping[str, Any],
    transcripts: Sequence[Transcript],
    formats: Iterable[str],
) -> dict[str, str]:
    """Write ``<key>.<fmt>`` for each format; returns {format: path relative to out_dir}."""
    return write_outputs(out_dir, key, document, transcripts, formats)
