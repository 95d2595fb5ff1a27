"""Where results go: a local directory, or an object-store prefix with the same layout.

Beside the formats asked for, every finished item keeps one canonical transcript (the
result document) under ``.bulkscribe/transcripts/``, so a format asked for later is rendered
from it instead of transcribing again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline.outputs.render import CueLayout, render_json, write_outputs
from pipeline.outputs.transcript import Transcript
from pipeline.settings import SubtitleSettings
from pipeline.storage import ObjectStore, join_key

TRANSCRIPTS_DIR = ".bulkscribe/transcripts"


def transcript_name(key: str) -> str:
    """Where an item's canonical transcript lives, relative to its output location."""
    return f"{TRANSCRIPTS_DIR}/{key}.json"


def write_item(
    sink: OutputSink,
    key: str,
    document: Mapping[str, Any],
    transcripts: Sequence[Transcript],
    formats: Iterable[str],
) -> dict[str, str]:
    """The formats asked for, then the canonical transcript: ``{format: name}``."""
    outputs = sink.write(key, document, transcripts, formats)  # checks ``key`` first
    sink.write_text(transcript_name(key), render_json(document))
    return outputs


class OutputSink(Protocol):
    location: str

    def write(
        self,
        key: str,
        document: Mapping[str, Any],
        transcripts: Sequence[Transcript],
        formats: Iterable[str],
    ) -> dict[str, str]: ...

    def write_text(self, name: str, text: str) -> str: ...

    def read_text(self, name: str) -> str | None: ...


class DirSink:
    def __init__(self, out_dir: Path, layout: CueLayout | None = None) -> None:
        self.out_dir = out_dir
        self.location = str(out_dir)
        self.layout = layout or CueLayout()

    def write(
        self,
        key: str,
        document: Mapping[str, Any],
        transcripts: Sequence[Transcript],
        formats: Iterable[str],
    ) -> dict[str, str]:
        return write_outputs(self.out_dir, key, document, transcripts, formats, layout=self.layout)

    def write_text(self, name: str, text: str) -> str:
        from pipeline.outputs.render import atomic_write

        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
        return str(path)

    def write_file(self, name: str, src: Path) -> str:
        """``src`` copied in as ``name``, atomically (a large results.jsonl)."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part")
        shutil.copyfile(src, part)
        os.replace(part, path)
        return str(path)

    def read_text(self, name: str) -> str | None:
        try:
            return (self.out_dir / name).read_text(encoding="utf-8")
        except OSError:
            return None


class StoreSink:
    """Renders into a temp dir (same checks as local), then uploads each file."""

    def __init__(
        self, store: ObjectStore, prefix: str = "", layout: CueLayout | None = None
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.location = store.uri(prefix) if prefix else store.url
        self.layout = layout or CueLayout()

    def write(
        self,
        key: str,
        document: Mapping[str, Any],
        transcripts: Sequence[Transcript],
        formats: Iterable[str],
    ) -> dict[str, str]:
        with tempfile.TemporaryDirectory(prefix="bulkscribe-out-") as tmp:
            outputs = write_outputs(
                Path(tmp), key, document, transcripts, formats, layout=self.layout
            )
            for name in outputs.values():
                self.store.put_file(
                    Path(tmp) / name, join_key(self.prefix, name), content_type=_content_type(name)
                )
        return outputs

    def write_text(self, name: str, text: str) -> str:
        key = join_key(self.prefix, name)
        self.store.put_bytes(text.encode("utf-8"), key, content_type=_content_type(name))
        return self.store.uri(key)

    def write_file(self, name: str, src: Path) -> str:
        """``src`` uploaded as ``name`` (boto3 sends a large file as a multipart upload)."""
        key = join_key(self.prefix, name)
        self.store.put_file(src, key, content_type=_content_type(name))
        return self.store.uri(key)

    def read_text(self, name: str) -> str | None:
        try:
            return self.store.get_bytes(join_key(self.prefix, name)).decode("utf-8")
        except Exception:
            return None


def _content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1]
    return {
        "json": "application/json",
        "jsonl": "application/x-ndjson",
        "txt": "text/plain; charset=utf-8",
        "srt": "application/x-subrip",
        "vtt": "text/vtt",
        "tsv": "text/tab-separated-values; charset=utf-8",
    }.get(ext, "application/octet-stream")


def cue_layout(subtitles: SubtitleSettings) -> CueLayout:
    """The subtitle layout the ``subtitles`` settings ask for."""
    return CueLayout(
        max_chars_per_line=subtitles.max_line_width, max_lines=subtitles.max_line_count
    )
