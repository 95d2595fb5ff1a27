"""Read a manifest (JSONL, CSV, plain list or directory) into items and per-line problems.

A batch names thousands of files, so one broken line must not stop it: every bad line becomes
a :class:`ManifestProblem` that fails on its own, in manifest order. Only a manifest that cannot
be read at all raises :class:`ManifestUnreadable`. Pure apart from reading the file or directory.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.errors import FailureCode
from pipeline.log import redact_url
from pipeline.models import ManifestItem, ManifestProblem

__all__ = [
    "FORMATS",
    "MEDIA_EXTENSIONS",
    "Manifest",
    "ManifestUnreadable",
    "display",
    "entries_from_sources",
    "load_manifest",
]

FORMATS = ("jsonl", "csv", "list", "dir")
_EXTS = "wav mp3 m4a aac flac ogg oga opus wma amr aiff aif webm mp4 m4v mov mkv avi flv wmv mpeg"
MEDIA_EXTENSIONS = frozenset([*_EXTS.split(), "mpg", "ts", "3gp"])  # matched case-insensitively
_FIELDS = frozenset({"id", "source", "language", "start_s", "end_s", "model", "channel"})
_SCHEMES = frozenset({"file", "http", "https", "s3", "oss"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "list"}
_BY_SUFFIX |= {".lst": "list", ".list": "list"}
_ID_RULE = (
    "ids may use only letters, digits, '.', '_' and '-' (1-128 characters), "
    "must not start with '.' or '-' and must not contain '..'"
)

_Row = tuple[int, "dict[str, Any] | str"]  # (line_no, fields) or (line_no, what is wrong)


class ManifestUnreadable(Exception):
    """The manifest as a whole cannot be read; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest: items and problems together, in manifest order."""

    path: str
    fmt: str
    entries: tuple[ManifestItem | ManifestProblem, ...]

    @property
    def items(self) -> tuple[ManifestItem, ...]:
        return tuple(e for e in self.entries if isinstance(e, ManifestItem))

    @property
    def problems(self) -> tuple[ManifestProblem, ...]:
        return tuple(e for e in self.entries if isinstance(e, ManifestProblem))


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


def load_manifest(path: str | os.PathLike[str], *, fmt: str | None = None) -> Manifest:
    """Parse the manifest at ``path``; ``fmt`` overrides detection (one of :data:`FORMATS`)."""
    p = os.path.abspath(os.fsdecode(os.fspath(path)))
    if fmt is not None and fmt not in FORMATS:
        raise ManifestUnreadable(f"{display(p)}: unknown manifest format {fmt!r} (use {FORMATS})")
    if fmt == "dir" or (fmt is None and os.path.isdir(p)):
        if not os.path.isdir(p):
            raise ManifestUnreadable(f"cannot read manifest {display(p)}: not a directory")
        return Manifest(p, "dir", _build(list(_read_dir(p)), p))
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ManifestUnreadable(f"cannot read manifest {display(p)}: {e.strerror or e}") from e
    data = data.removeprefix(b"\xef\xbb\xbf")
    fmt = fmt or _BY_SUFFIX.get(os.path.splitext(p)[1].lower()) or _sniff(data)
    read = {"jsonl": _read_jsonl, "csv": _read_csv, "list": _read_list}[fmt]
    return Manifest(p, fmt, _build(list(read(data, p)), os.path.dirname(p)))


# --- readers: each yields (line_no, fields) or (line_no, error) -----------------------------


def entries_from_sources(sources: Sequence[str],
                         ) -> tuple[ManifestItem | ManifestProblem, ...]:
    """Items for a plain list of sources (scheduled runs over a bucket prefix), ids derived
    exactly as for a list manifest."""
    return _build([(n, {"source": src}) for n, src in enumerate(sources, start=1)], os.getcwd())


def _lines(data: bytes, errors: str = "strict") -> Iterator[tuple[int, str, str | None]]:
    """(line_no, text, decode error) of each line that is not blank or a '#' comment."""
    for n, raw in enumerate(data.splitlines(), 1):
        if raw.strip() and not raw.lstrip().startswith(b"#"):
            try:  # strict per line: one bad line is a problem, not an unreadable manifest
                yield n, raw.decode("utf-8", errors), None
            except UnicodeDecodeError as e:
                yield n, "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"


def _cells(text: str) -> list[str]:
    # One record per physical line: a stray quote then spoils its own line, not the rest.
    return next(csv.reader([text], strict=True), [])


def _sniff(data: bytes) -> str:
    for _, line, _ in _lines(data, "surrogateescape"):
        line = line.strip()
        if line.startswith("{"):
            return "jsonl"
        try:
            return "csv" if "," in line and "source" in map(str.strip, _cells(line)) else "list"
        except csv.Error:
            return "list"
    return "list"


def _read_jsonl(data: bytes, _path: str) -> Iterator[_Row]:
    for n, text, err in _lines(data):
        if err:
            yield n, err
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield n, f"not valid JSON ({e.msg} at column {e.colno})"
            continue
        yield (
            n,
            obj if isinstance(obj, dict) else f"expected a JSON object, got {text.strip()[:40]!r}",
        )


def _read_csv(data: bytes, path: str) -> Iterator[_Row]:
    lines = list(_lines(data))
    if not lines:
        return
    n0, text, err = lines[0]
    try:
        header = [h.strip() for h in _cells(text)]
    except csv.Error as e:
        err = f"not valid CSV ({e})"
    if err:
        raise ManifestUnreadable(f"cannot read CSV manifest {display(path)}: line {n0}: {err}")
    if "source" not in header or len(set(header)) < len(header):
        raise ManifestUnreadable(
            f"cannot read CSV manifest {display(path)}: header line {n0} needs one 'source'"
            f" column and no repeated names (found {', '.join(map(repr, header))})"
        )
    for n, text, err in lines[1:]:
        cells: list[str] = []
        try:
            cells = [] if err else [c.strip() for c in _cells(text)]
        except csv.Error as e:
            err = f"not valid CSV ({e})"
        if not err and len(cells) > len(header):
            err = f"{len(cells)} cells but the header has {len(header)} columns"
        # Empty cells mean absent; an unnamed column (trailing comma in the header) is ignored.
        yield n, err or {k: v for k, v in zip(header, cells, strict=False) if k and v}


def _read_list(data: bytes, _path: str) -> Iterator[_Row]:
    # surrogateescape: a non-UTF-8 file name round-trips to its bytes via os.fsencode.
    for n, text, _ in _lines(data, "surrogateescape"):
        yield n, {"source": text.strip()}


def _read_dir(root: str) -> Iterator[_Row]:
    def fail(e: OSError) -> None:  # a silently missing subtree would drop files unnoticed
        raise ManifestUnreadable(f"cannot walk manifest directory {display(root)}: {e}") from e

    found: list[str] = []
    for d, dirs, files in os.walk(root, onerror=fail):  # str root: names come surrogate-escaped
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        found += [
            os.path.join(d, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1][1:].lower() in MEDIA_EXTENSIONS
        ]
    found.sort(key=os.fsencode)  # by bytes: the same order on every machine and locale
    for n, p in enumerate(found, 1):
        yield n, {"source": p}


# --- fields and ids -----------------------------------------------------------------------


def _safe_id(v: Any) -> bool:
    return (
        isinstance(v, str)
        and 1 <= len(v) <= 128
        and v[0] not in ".-"
        and ".." not in v
        and all(c.isalnum() or c in "._-" for c in v)
    )


def _derive_id(source: str) -> str:
    """A file-name-safe id from the source's file name stem."""
    if _SCHEME.match(source):
        name = unquote(urlsplit(source).path.rstrip("/").rpartition("/")[2])
    else:
        name = os.path.basename(source.rstrip("/"))
    s = "".join(c if c.isalnum() or c in "._-" else "_" for c in os.path.splitext(name)[0])
    while ".." in s:
        s = s.replace("..", "._")
    return s.lstrip(".-")[:100] or "item"  # 100 leaves room for a "-N" suffix within 128


def _convert(kind: type, v: Any) -> Any:
    """``v`` as a ``kind`` (str, or a non-negative float/int, numeric strings allowed) or None."""
    if kind is str:
        return v.strip() if isinstance(v, str) else None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        x = int(v) if kind is int and isinstance(v, str) else float(v)
    except (ValueError, OverflowError):
        return None
    return kind(x) if math.isfinite(x) and x >= 0 and (kind is float or x == int(x)) else None


_NUM = "a non-negative number"
_KINDS = {"language": (str, "a string"), "model": (str, "a string"), "start_s": (float, _NUM)}
_KINDS |= {"end_s": (float, _NUM), "channel": (int, "a non-negative integer")}


def _source(src: Any, base: str) -> tuple[str | None, str | None]:
    """(stored source, error); a local path is made absolute against ``base``."""
    if not isinstance(src, str):
        return None, f"source must be a non-empty string, got {src!r}"
    try:
        os.fsencode(src)
    except UnicodeEncodeError:
        return src, "source contains a character that cannot be a file name"
    if "\0" in src:
        return src, "source contains a NUL character"
    m = _SCHEME.match(src)
    if m is None:
        return os.path.abspath(os.path.join(base, src)), None
    if m.group(1).lower() not in _SCHEMES:
        return src, (
            f"source scheme '{m.group(1)}://' is not supported"
            " (use a local path, file://, http(s)://, s3:// or oss://)"
        )
    return src, None


def _parse(f: dict[str, Any], base: str) -> tuple[dict[str, Any], list[str]]:
    """The typed ManifestItem fields of one line, and everything wrong with them."""
    # null and blank optional values mean absent, as empty CSV cells do
    f = {k: v for k, v in f.items() if k == "id" or not (v is None or str(v).strip() == "")}
    errs: list[str] = []
    out: dict[str, Any] = {"source": None}
    if "source" not in f:
        errs.append("'source' is missing")
    else:
        out["source"], err = _source(f["source"], base)
        errs += [err] if err else []
    for key, (kind, what) in _KINDS.items():
        if key in f and (out.setdefault(key, _convert(kind, f[key])) is None):
            errs.append(f"{key} must be {what}, got {f[key]!r}")
    start, end = out.get("start_s"), out.get("end_s")
    if start is not None and end is not None and end <= start:
        errs.append(f"end_s ({end}) must be greater than start_s ({start})")
    out["options"] = tuple(sorted((k, v) for k, v in f.items() if k not in _FIELDS))
    return out, errs


def _build(rows: list[_Row], base: str) -> tuple[ManifestItem | ManifestProblem, ...]:
    # Explicit ids first, so a derived id never takes one that a later line names.
    used = {f["id"] for _, f in rows if isinstance(f, dict) and _safe_id(f.get("id"))}
    claimed: dict[str, int] = {}  # explicit id -> first line that named it
    suffix: dict[str, int] = {}  # derived base -> next "-N" to try
    out: list[ManifestItem | ManifestProblem] = []
    for n, f in rows:
        if isinstance(f, str):
            out.append(ManifestProblem(n, FailureCode.MANIFEST_INVALID.value, f"line {n}: {f}"))
            continue
        typed, errs = _parse(f, base)
        src, item_id, dup = typed["source"], None, None
        if f.get("id") is not None and not isinstance(f["id"], str):
            errs.insert(0, f"id must be a string, got {f['id']!r}")
        elif f.get("id") is not None and not _safe_id(f["id"]):
            errs.insert(0, f"id {f['id']!r} is not a safe file name: {_ID_RULE}")
        elif f.get("id") is not None:
            item_id = f["id"]
            dup = claimed.setdefault(item_id, n)
        elif src is not None:
            base_id = item_id = _derive_id(src)
            while item_id in used:
                suffix[base_id] = suffix.get(base_id, 1) + 1
                item_id = f"{base_id}-{suffix[base_id]}"
            used.add(item_id)
        if errs:
            msg = f"line {n}: " + "; ".join(errs)
            out.append(ManifestProblem(n, FailureCode.MANIFEST_INVALID.value, msg, item_id, src))
        elif dup is not None and dup != n:
            msg = f"line {n}: id {item_id!r} is already used on line {dup}"
            out.append(ManifestProblem(n, FailureCode.DUPLICATE_ID.value, msg, item_id, src))
        else:
            assert item_id is not None  # no errors: an id was given or derived from the source
            out.append(ManifestItem(item_id=item_id, line_no=n, **typed))
    return tuple(out)
