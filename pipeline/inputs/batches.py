"""Manifest entries into ledger items, shared by `run`, `submit` and scheduled runs.

Each item's spec pins what it will be transcribed with (engine, model, language), so any
worker can process it whatever its own defaults, and a changed spec is a new attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.asr.catalog import model_info, unsupported_options
from pipeline.errors import FailureCode, PipelineError
from pipeline.inputs.manifest import display
from pipeline.ledger import ItemSeed
from pipeline.ledger.values import PROBLEM_PREFIX
from pipeline.models import ManifestItem, ManifestProblem


def key_of(entry: ManifestItem | ManifestProblem) -> str:
    # PROBLEM_PREFIX cannot start a manifest id, so these keys never collide with real ones.
    if isinstance(entry, ManifestProblem):
        return f"{PROBLEM_PREFIX}line{entry.line_no}"
    return entry.item_id


def batch_id_for(out_dir: Path) -> str:
    """Embedded runs are one batch per output directory."""
    digest = hashlib.sha1(str(out_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return f"run-{digest[:12]}"


def new_batch_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"b-{stamp}-{secrets.token_hex(3)}"


def item_spec(
    entry: ManifestItem,
    *,
    engine: str,
    model: str,
    language: str | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    # The spec is shown (``dlq show``, the console) and copied into attempts: it holds the
    # source as displayed. The fetchable URL, credentials and all, lives only in the item's
    # ``source`` column (see seeds_for).
    spec = entry.spec() | {
        "source": display(storable(entry.source)),
        "engine": engine,
        "model": entry.model or model,
        "language": entry.language or language,
    }
    if options:
        spec["options"] = {**dict(options), **spec["options"]}
    return spec


# One encoder for every line: json.dumps with any non-default option builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=True).encode


def fingerprint(spec: Mapping[str, Any]) -> str:
    blob = _CANONICAL(spec)
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()


def seeds_for(
    entries: Iterable[ManifestItem | ManifestProblem],
    *,
    engine: str,
    model: str,
    language: str | None,
    options: Mapping[str, Any] | None = None,
    local_files: bool = False,
) -> list[ItemSeed]:
    return list(
        iter_seeds(
            entries,
            engine=engine,
            model=model,
            language=language,
            options=options,
            local_files=local_files,
        )
    )


def iter_seeds(
    entries: Iterable[ManifestItem | ManifestProblem],
    *,
    engine: str,
    model: str,
    language: str | None,
    options: Mapping[str, Any] | None = None,
    local_files: bool = False,
) -> Iterator[ItemSeed]:
    """:func:`seeds_for` one at a time, for intakes streamed from a large manifest.

    ``local_files``: this process is the one that reads local sources (an embedded run), so
    a path that does not exist fails at intake with ``not_found``, in the same bulk insert
    as the rest, instead of taking a claim, a step and a failure write each. ``submit``
    leaves this off: its paths are the workers' to read, on filesystems it may not see.
    """
    from pipeline.inputs.sources import (  # httpx: not for `status`, which needs batch_id_for
        local_missing,
        source_stamp,
    )

    for entry in entries:
        if isinstance(entry, ManifestProblem):
            yield ItemSeed(
                key=key_of(entry),
                line_no=entry.line_no,
                source=storable(entry.source or ""),
                spec={"id": entry.item_id},
                fingerprint=fingerprint({"problem": entry.code, "message": entry.message}),
                failure=(entry.code, entry.message),
            )
            continue
        spec = item_spec(entry, engine=engine, model=model, language=language, options=options)
        source = storable(entry.source)
        refused = _refused(spec, entry.line_no)
        stamp = None if refused else source_stamp(entry.source)
        if local_files and refused is None and stamp is None and local_missing(entry.source):
            # The same words as the probe's, which says it for a file that goes later.
            refused = FailureCode.NOT_FOUND.value, f"{display(entry.source)} does not exist"
        # The fingerprint hashes the fetchable source, not the masked one: a manifest line
        # whose token or password changed is a new attempt, fetched with the new one.
        yield ItemSeed(
            key=entry.item_id,
            line_no=entry.line_no,
            source=source,
            spec=spec,
            fingerprint=fingerprint(spec | {"source": source}),
            source_stamp=stamp,
            failure=refused,
        )


def _refused(spec: Mapping[str, Any], line_no: int) -> tuple[str, str] | None:
    """(unsupported_option, message) when the item asks its engine for what it cannot do."""
    if not spec["options"]:  # most lines of a long manifest: nothing to look up
        return None
    try:
        info = model_info(spec["engine"], spec["model"])
    except PipelineError:
        return None  # an unknown model fails the item where it is first used, as before
    names = unsupported_options(info, spec["options"] or {})
    if not names:
        return None
    return FailureCode.UNSUPPORTED_OPTION.value, (
        f"line {line_no}: option {', '.join(map(repr, names))} is not supported by the "
        f"{info.engine} engine (model {info.model})"
    )


def storable(source: str) -> str:
    """Non-UTF-8 file names (surrogate escapes) become file:// URLs so they survive the DB."""
    try:
        source.encode("utf-8")
        return source
    except UnicodeEncodeError:
        return "file://" + quote(os.fsencode(os.path.abspath(source)))
