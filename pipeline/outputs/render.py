"""Output writers: ``<id>.json``, ``.txt``, ``.srt``, ``.vtt`` and ``.tsv`` from engine-neutral
transcripts.

Kept apart from the engines (as openai/whisper's ``get_writer``) so every engine gets the
same subtitles. Rendering is pure; only :func:`write_outputs` touches the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Same-package helpers: cue text must split and join exactly as transcript text does.
from pipeline.errors import OutputRefused
from pipeline.inputs.ids import id_error
from pipeline.outputs.transcript import (
    _TRAILING_PUNCT,
    Sentence,
    Transcript,
    Word,
    _is_cjk,
    join_texts,
)

__all__ = [
    "FORMATS",
    "Cue",
    "CueLayout",
    "atomic_write",
    "build_cues",
    "render_json",
    "render_srt",
    "render_tsv",
    "render_txt",
    "render_vtt",
    "write_outputs",
]

FORMATS = ("json", "txt", "srt", "vtt", "tsv")


@dataclass(frozen=True, slots=True)
class CueLayout:
    """Subtitle limits; defaults follow common broadcast guidelines (42 chars x 2 lines)."""

    max_chars_per_line: int = 42
    max_lines: int = 2
    max_duration_ms: int = 7000
    min_duration_ms: int = 700
    max_gap_ms: int = 1500


@dataclass(frozen=True, slots=True)
class Cue:
    begin_ms: int
    end_ms: int
    lines: tuple[str, ...]


def _tokens(text: str) -> list[str]:
    """Whitespace words, with CJK runs cut per character (punctuation stays attached)."""
    out: list[str] = []
    for word in text.split():
        piece = ""
        for ch in word:
            if piece and ch not in _TRAILING_PUNCT and (_is_cjk(ch) or _is_cjk(piece[-1])):
                out.append(piece)
                piece = ""
            piece += ch
        out.append(piece)
    return out


def _width(text: str) -> int:
    # CJK glyphs are double width on screen; counting them twice keeps lines readable.
    return sum(2 if _is_cjk(ch) else 1 for ch in text)


def _sentence_units(sentence: Sentence) -> list[Word]:
    """Display units (punctuation attached) with times; ``punctuation`` is left empty."""
    if sentence.words:
        timed = (
            Word(w.begin_ms, w.end_ms, (w.text + w.punctuation).strip()) for w in sentence.words
        )
        return [u for u in timed if u.text]
    # No word times: spread the tokens over the sentence in proportion to their length.
    tokens = _tokens(sentence.text)
    total = sum(len(t) for t in tokens)
    span = max(0, sentence.end_ms - sentence.begin_ms)
    units: list[Word] = []
    done = 0
    for t in tokens:
        begin = sentence.begin_ms + span * done // total
        done += len(t)
        units.append(Word(begin, sentence.begin_ms + span * done // total, t))
    return units


def _greedy(texts: Sequence[str], width: int) -> list[str]:
    lines: list[list[str]] = []
    for t in texts:
        if lines and _width(join_texts([*lines[-1], t])) <= width:
            lines[-1].append(t)
        else:
            lines.append([t])
    return [join_texts(ln) for ln in lines]


def _fits(texts: Sequence[str], layout: CueLayout, width: int) -> list[str] | None:
    lines = _greedy(texts, width)
    ok = len(lines) <= layout.max_lines and all(_width(ln) <= width for ln in lines)
    return lines if ok else None


def _balanced(texts: Sequence[str], layout: CueLayout) -> tuple[str, ...]:
    """Fewest lines, then the narrowest width that still fits: 2 x 21 reads better than 40 + 2."""
    whole = join_texts(texts)
    if len(texts) == 1 or _width(whole) <= layout.max_chars_per_line:
        return (whole,)  # a single over-long word is allowed on its own line
    for width in range(_width(whole) // layout.max_lines, layout.max_chars_per_line):
        if lines := _fits(texts, layout, width):
            return tuple(lines)
    return tuple(_greedy(texts, layout.max_chars_per_line))


def _sentence_cues(units: Sequence[Word], layout: CueLayout) -> list[Cue]:
    cues: list[Cue] = []
    group: list[Word] = []
    for u in units:
        # Greedy filling needs the fewest lines, so it alone decides whether a word fits.
        if group and (
            u.end_ms - group[0].begin_ms > layout.max_duration_ms
            or u.begin_ms - group[-1].end_ms > layout.max_gap_ms
            or not _fits([*(g.text for g in group), u.text], layout, layout.max_chars_per_line)
        ):
            cues.append(_cue(group, layout))
            group = []
        group.append(u)
    if group:
        cues.append(_cue(group, layout))
    return cues


def _cue(group: Sequence[Word], layout: CueLayout) -> Cue:
    lines = _balanced([u.text for u in group], layout)
    return Cue(group[0].begin_ms, max(u.end_ms for u in group), lines)


def build_cues(transcripts: Sequence[Transcript], layout: CueLayout = CueLayout()) -> list[Cue]:
    """Subtitle cues for all channels, merged by start time, never overlapping."""
    raw = [
        cue
        for t in transcripts
        for s in t.sentences  # cues never span sentences: each one is grouped on its own
        for cue in _sentence_cues(_sentence_units(s), layout)
        if any(cue.lines)
    ]
    raw.sort(key=lambda c: c.begin_ms)  # stable: simultaneous cues keep channel order
    out: list[Cue] = []
    for cue in raw:
        begin = max(cue.begin_ms, 0)
        if out and begin < out[-1].end_ms:
            # Overlap (other channel, or bad word times): cut the previous cue short, but
            # not below min_duration, and start this one where it now ends.
            prev = out[-1]
            keep = max(begin, prev.begin_ms + max(1, layout.min_duration_ms))
            out[-1] = Cue(prev.begin_ms, min(prev.end_ms, keep), prev.lines)
            begin = out[-1].end_ms
        out.append(Cue(begin, max(cue.end_ms, begin + 1), cue.lines))
    # Flash-length cues are unreadable: stretch toward min_duration into free time only.
    for i, cue in enumerate(out):
        limit = out[i + 1].begin_ms if i + 1 < len(out) else cue.begin_ms + layout.min_duration_ms
        target = min(cue.begin_ms + layout.min_duration_ms, limit)
        if target > cue.end_ms:
            out[i] = Cue(cue.begin_ms, target, cue.lines)
    return out


def _timestamp(ms: int, sep: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def render_txt(transcripts: Sequence[Transcript]) -> str:
    """One line per sentence, ``Speaker N: `` when diarized, channels split by a blank line."""
    blocks = []
    for t in transcripts:
        lines = []
        for s in t.sentences:
            text = s.text.strip() or join_texts(w.text + w.punctuation for w in s.words)
            if text:
                prefix = f"Speaker {s.speaker_id}: " if s.speaker_id is not None else ""
                lines.append(prefix + text + "\n")
        if lines:
            blocks.append("".join(lines))
    return "\n".join(blocks)


def render_srt(transcripts: Sequence[Transcript], *, layout: CueLayout = CueLayout()) -> str:
    return "\n".join(
        f"{i}\n{_timestamp(c.begin_ms, ',')} --> {_timestamp(c.end_ms, ',')}\n"
        + "".join(line + "\n" for line in c.lines)
        for i, c in enumerate(build_cues(transcripts, layout), start=1)
    )


def _vtt_escape(text: str) -> str:
    # Cue text is parsed for tags and entities and may not contain "-->"; escaping covers both.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_vtt(transcripts: Sequence[Transcript], *, layout: CueLayout = CueLayout()) -> str:
    return "WEBVTT\n\n" + "\n".join(
        f"{_timestamp(c.begin_ms, '.')} --> {_timestamp(c.end_ms, '.')}\n"
        + "".join(_vtt_escape(line) + "\n" for line in c.lines)
        for c in build_cues(transcripts, layout)
    )


def render_tsv(transcripts: Sequence[Transcript]) -> str:
    """Whisper's tsv: a ``start``/``end``/``text`` header, then one sentence a line with
    integer milliseconds, all channels merged by start time."""
    rows = sorted(
        ((s.begin_ms, s.end_ms, s.text) for t in transcripts for s in t.sentences),
        key=lambda r: r[0],
    )
    lines = ["start\tend\ttext\n"]
    for begin, end, text in rows:
        flat = " ".join(text.split())  # tabs and newlines would break the columns
        if flat:
            lines.append(f"{begin}\t{end}\t{flat}\n")
    return "".join(lines)


def render_json(document: Mapping[str, Any]) -> str:
    return json.dumps(dict(document), ensure_ascii=False, indent=2) + "\n"


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``name`` in the directory ``dir_fd`` atomically: a fixed-length temporary name
    (so a name near NAME_MAX still fits), fsync, then rename over the old file."""
    tmp = f".bulkscribe-{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o644)  # the umask must not hide outputs from servers
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def atomic_write(path: Path, text: str) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _write_at(fd, path.name, text.encode("utf-8"))
    finally:
        os.close(fd)


def _open_subdir(root: Path, parts: Sequence[str]) -> int:
    """A descriptor of ``root/parts...``, creating what is missing. Each step is opened with
    O_NOFOLLOW relative to the one before, so a symlink planted anywhere in an id's path
    cannot send the write outside ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                step = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file in the way
                raise OutputRefused(
                    f"{part!r} in the output path is not a directory under {root} ({exc.strerror})"
                ) from exc
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_outputs(
    out_dir: Path,
    item_id: str,
    document: Mapping[str, Any],
    transcripts: Sequence[Transcript],
    formats: Iterable[str],
    *,
    layout: CueLayout = CueLayout(),
) -> dict[str, str]:
    """Write ``<out_dir>/<item_id>.<fmt>`` atomically; returns ``{fmt: path under out_dir}``.

    ``item_id`` may nest (``day2/meeting``): its directories are created under ``out_dir``.
    """
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(map(repr, unknown))}")
    # item_id comes from manifests: never let it name a file outside out_dir.
    if err := id_error(item_id):
        raise ValueError(err)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    renderers = {
        "json": lambda: render_json(document),
        "txt": lambda: render_txt(transcripts),
        "srt": lambda: render_srt(transcripts, layout=layout),
        "vtt": lambda: render_vtt(transcripts, layout=layout),
        "tsv": lambda: render_tsv(transcripts),
    }
    *dirs, stem = item_id.split("/")
    dir_fd = _open_subdir(out_dir, dirs)
    try:
        # Check every target before writing any, so a refusal leaves no partial set behind.
        for fmt in wanted:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISREG(os.lstat(f"{stem}.{fmt}", dir_fd=dir_fd).st_mode):
                    raise OutputRefused(
                        f"item id {item_id!r}: {item_id}.{fmt} under {out_dir} "
                        "is not a regular file (a symlink?)"
                    )
        for fmt in wanted:
            _write_at(dir_fd, f"{stem}.{fmt}", renderers[fmt]().encode("utf-8"))
    finally:
        os.close(dir_fd)
    return {fmt: f"{item_id}.{fmt}" for fmt in wanted}
