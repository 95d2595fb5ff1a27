"""What each INPUT of ``run``/``submit`` is, and reading it safely.

An INPUT is a media file, a directory or a manifest. It is classified by its type and its
first bytes, never by its name alone, so a recording called ``notes.txt`` is transcribed
rather than parsed as 2,000 lines of garbage, and a FIFO or ``/dev/zero`` is refused before
anything waits on it or reads it. Manifests are read line by line with a cap per line and in
total; directories are walked once per real directory, so a symlink loop cannot hang a run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from pipeline.log import redact_url
from pipeline.models import human_bytes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MAX_LINE_BYTES",
    "MEDIA_EXTENSIONS",
    "Input",
    "ManifestUnreadable",
    "cells",
    "classify",
    "dir_prefixes",
    "display",
    "lines",
    "open_regular",
    "walk",
]

FORMATS = ("jsonl", "csv", "list", "dir")  # what --manifest-format may force
_EXTS = "wav mp3 m4a aac flac ogg oga opus wma amr aiff aif webm mp4 m4v mov mkv avi flv wmv mpeg"
MEDIA_EXTENSIONS = frozenset([*_EXTS.split(), "mpg", "ts", "3gp"])  # matched case-insensitively
MAX_LINE_BYTES = 64 * 1024  # a longer line is manifest_invalid (one 50 MB line ended in the ledger)
DEFAULT_MAX_BYTES = 1024**3  # settings.manifest.max_bytes
_SNIFF_BYTES = 64 * 1024
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "list"}
_BY_SUFFIX |= {".lst": "list", ".list": "list"}
_BOM = b"\xef\xbb\xbf"


class ManifestUnreadable(Exception):
    """An INPUT cannot be used at all; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Input:
    """One INPUT, classified by :func:`classify`."""

    path: str  # absolute
    kind: str  # media | dir | jsonl | csv | list


def display(s: str) -> str:
    """``s`` made printable and JSON-safe: surrogate-escaped bytes shown as ``\\xNN``, and
    fit to show: a URL's credentials masked (:func:`pipeline.log.redact_url`)."""
    s = redact_url(s)
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    try:
        return os.fsencode(s).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate not from surrogateescape (e.g. JSON "\ud800")
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _abspath(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fsdecode(os.fspath(path)))


def _what(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(p: str) -> IO[bytes]:
    """``p`` opened for reading, refusing anything but a regular file without blocking on it
    (opening a FIFO for reading would wait for a writer for ever)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ManifestUnreadable(f"cannot read {display(p)}: {e.strerror or e}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ManifestUnreadable(
            f"cannot read {display(p)}: it is {_what(mode)}, "
            "not a media file, directory or manifest"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _binary(head: bytes) -> bool:
    """Media, not text: NUL bytes, or mostly bytes that are not UTF-8 text. A list naming a
    few Latin-1 file names stays text."""
    if b"\0" in head:
        return True
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    odd = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in "\t\n\r\f\v"))
    return odd > len(text) * 0.3


def classify(
    path: str | os.PathLike[str], fmt: str | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Input:
    """What ``path`` is, by its type and content: never parse a media file as a list.

    A directory is walked; a file with a media extension, or binary content, is one media
    item; any other regular file is a manifest, by suffix or by its first line. FIFOs,
    devices, sockets, a manifest over ``max_bytes`` and a missing path raise
    :class:`ManifestUnreadable` before anything is read from them.
    """
    p = _abspath(path)
    if fmt is not None and fmt not in FORMATS:
        raise ManifestUnreadable(f"{display(p)}: unknown manifest format {fmt!r} (use {FORMATS})")
    try:
        st = os.stat(p)
    except OSError as e:
        raise ManifestUnreadable(f"cannot read {display(p)}: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        if fmt not in (None, "dir"):
            raise ManifestUnreadable(
                f"cannot read {display(p)} as a {fmt} manifest: it is a directory"
            )
        return Input(p, "dir")
    if fmt == "dir":
        raise ManifestUnreadable(f"cannot read manifest {display(p)}: not a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ManifestUnreadable(
            f"cannot read {display(p)}: it is {_what(st.st_mode)}, "
            "not a media file, directory or manifest"
        )
    suffix = os.path.splitext(p)[1].lower()
    if fmt is None and suffix[1:] in MEDIA_EXTENSIONS:
        return Input(p, "media")
    with open_regular(p) as f:
        head = f.read(_SNIFF_BYTES).removeprefix(_BOM)
    if _binary(head):
        if fmt is not None:
            raise ManifestUnreadable(
                f"cannot read {display(p)} as a {fmt} manifest: it is binary (a media file?)"
            )
        return Input(p, "media")
    if st.st_size > max_bytes:
        raise ManifestUnreadable(
            f"manifest {display(p)} is {human_bytes(st.st_size)}, over manifest.max_bytes "
            f"({human_bytes(max_bytes)}; BULKSCRIBE_MANIFEST__MAX_BYTES raises it)"
        )
    return Input(p, fmt or _BY_SUFFIX.get(suffix) or _sniff(head))


def dir_prefixes(dirs: Sequence[str]) -> dict[str, str]:
    if len(set(dirs)) < 2:
        return {}
    names = [os.path.basename(d) or "root" for d in dirs]
    out = {}
    for d, name in zip(dirs, names, strict=True):
        if names.count(name) > 1:
            name = f"{name}-{hashlib.sha256(os.fsencode(d)).hexdigest()[:8]}"
        out[d] = name
    return out


def walk(root: str) -> tuple[list[str], list[str]]:
    """Media files under ``root`` (sorted by path bytes) and what was skipped, following
    directory symlinks once each: a link back to a parent neither hangs nor duplicates."""

    def fail(e: OSError) -> ManifestUnreadable:  # a silently missing subtree would drop files
        return ManifestUnreadable(f"cannot walk directory {display(root)}: {e}")

    found: list[str] = []
    skipped: list[str] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                skipped.append(
                    f"skipped {display(d)}: it leads to a directory already walked "
                    "(a symlink loop?)"
                )
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:  # str root: names come surrogate-escaped
                entries = sorted(it, key=lambda x: os.fsencode(x.name), reverse=True)
        except OSError as exc:
            raise fail(exc) from exc
        for entry in entries:  # reversed: the stack pops them in byte order
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.is_file() and (
                    os.path.splitext(entry.name)[1][1:].lower() in MEDIA_EXTENSIONS
                ):
                    found.append(entry.path)
            except OSError:  # a dangling or looping symlink: nothing to transcribe there
                continue
    found.sort(key=os.fsencode)  # by bytes: the same order on every machine and locale
    return found, skipped


def lines(
    f: IO[bytes], path: str, max_bytes: int, errors: str
) -> Iterator[tuple[int, str, str | None]]:
    """(line_no, text, error) of each line that is not blank or a '#' comment, read as a
    stream: a line over :data:`MAX_LINE_BYTES` is an error of its own and is never held in
    memory whole; a file that grows past ``max_bytes`` while read is unreadable."""
    total = 0
    n = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        n += 1
        total += len(raw)
        too_long = len(raw.removesuffix(b"\n")) > MAX_LINE_BYTES
        while too_long and not raw.endswith(b"\n") and (raw := f.readline(MAX_LINE_BYTES)):
            total += len(raw)  # skip the rest of the line, chunk by chunk
            if total > max_bytes:
                break
        if total > max_bytes:
            raise ManifestUnreadable(
                f"manifest {display(path)} is over manifest.max_bytes ({human_bytes(max_bytes)})"
            )
        if too_long:
            yield n, "", f"longer than the limit of {MAX_LINE_BYTES // 1024} KiB"
            continue
        if n == 1:
            raw = raw.removeprefix(_BOM)
        raw = raw.rstrip(b"\r\n")
        if raw.strip() and not raw.lstrip().startswith(b"#"):
            try:  # strict per line: one bad line is a problem, not an unreadable manifest
                yield n, raw.decode("utf-8", errors), None
            except UnicodeDecodeError as e:
                yield n, "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"


def cells(text: str) -> list[str]:
    # One record per physical line: a stray quote then spoils its own line, not the rest.
    return next(csv.reader([text], strict=True), [])


def _sniff(head: bytes) -> str:
    for line in head.decode("utf-8", "surrogateescape").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            return "jsonl"
        try:
            return "csv" if "," in line and "source" in map(str.strip, cells(line)) else "list"
        except csv.Error:
            return "list"
    return "list"
