"""What ``run`` and ``submit`` are given (media files, directories, manifests) into items.

Each INPUT is a media file (one item), a directory (walked recursively for media files, its
tree mirrored in the ids) or a manifest (JSONL, CSV or a plain list of sources). A batch names
thousands of files, so one broken line must not stop it: every bad line becomes a
:class:`ManifestProblem` that fails on its own, in input order. Only an INPUT that cannot be
used at all raises :class:`ManifestUnreadable` (the CLI's exit 2). Pure apart from reading the
files and walking the directories.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

from pipeline.asr.catalog import KNOWN_OPTIONS
from pipeline.errors import FailureCode
from pipeline.ids import derive_id, id_error, source_parts
from pipeline.models import ManifestItem, ManifestProblem, human_bytes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MAX_LINE_BYTES",
    "MAX_OPTIONS_BYTES",
    "MEDIA_EXTENSIONS",
    "Input",
    "Manifest",
    "ManifestUnreadable",
    "classify",
    "display",
    "entries_from_sources",
    "load_inputs",
    "load_manifest",
]

FORMATS = ("jsonl", "csv", "list", "dir")
_EXTS = "wav mp3 m4a aac flac ogg oga opus wma amr aiff aif webm mp4 m4v mov mkv avi flv wmv mpeg"
MEDIA_EXTENSIONS = frozenset([*_EXTS.split(), "mpg", "ts", "3gp"])  # matched case-insensitively
FIELDS = frozenset({"id", "source", "language", "start_s", "end_s", "model", "channel"})
MAX_LINE_BYTES = 64 * 1024  # a longer line is manifest_invalid (one 50 MB line ended in the ledger)
MAX_OPTIONS_BYTES = 16 * 1024  # an item's options as JSON
MAX_OPTIONS_DEPTH = 32  # nesting of option values; deeper JSON exhausts the stack downstream
DEFAULT_MAX_BYTES = 1024**3  # settings.manifest.max_bytes
_SNIFF_BYTES = 64 * 1024
_SCHEMES = frozenset({"file", "http", "https", "s3", "oss"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "list"}
_BY_SUFFIX |= {".lst": "list", ".list": "list"}
_BOM = b"\xef\xbb\xbf"

_Row = tuple[int, "dict[str, Any] | str"]  # (line_no, fields) or (line_no, what is wrong)


class ManifestUnreadable(Exception):
    """An INPUT cannot be used at all; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Input:
    """One INPUT, classified by :func:`classify`."""

    path: str  # absolute
    kind: str  # media | dir | jsonl | csv | list


@dataclass(frozen=True, slots=True)
class _Candidate:
    """An entry before duplicate ids are settled, with how messages name its line or file."""

    entry: ManifestItem | ManifestProblem
    where: str  # "line 3", "m.jsonl line 3" or the file's path
    ref: str  # how a later duplicate names it: "on line 3", "by /in/a.wav"


@dataclass(frozen=True, slots=True)
class Manifest:
    """Parsed INPUTs: items and problems together, in input order, and warnings to show."""

    path: str
    fmt: str
    entries: tuple[ManifestItem | ManifestProblem, ...]
    warnings: tuple[str, ...] = ()
    candidates: tuple[_Candidate, ...] = field(default=(), repr=False)

    @property
    def items(self) -> tuple[ManifestItem, ...]:
        return tuple(e for e in self.entries if isinstance(e, ManifestItem))

    @property
    def problems(self) -> tuple[ManifestProblem, ...]:
        return tuple(e for e in self.entries if isinstance(e, ManifestProblem))

    def prefer(self, owners: Mapping[str, str]) -> Manifest:
        """Settle duplicate ids in favour of the source that already holds each id
        (``owners``: id -> stored source, from the ledger), so a file added beside an old
        one can never take over its outputs, whichever sorts first."""
        if not self.candidates:
            return self
        return replace(self, entries=_settle(self.candidates, owners))


def display(s: str) -> str:
    """``s`` made printable and JSON-safe: surrogate-escaped bytes shown as ``\\xNN``."""
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    try:
        return os.fsencode(s).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate not from surrogateescape (e.g. JSON "\ud800")
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


# --- INPUTs: what each one is -------------------------------------------------------------


def _abspath(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fsdecode(os.fspath(path)))


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(p: str) -> IO[bytes]:
    """``p`` opened for reading, refusing anything but a regular file without blocking on it
    (opening a FIFO for reading would wait for a writer for ever)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ManifestUnreadable(f"cannot read {display(p)}: {e.strerror or e}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ManifestUnreadable(f"cannot read {display(p)}: it is {_what(mode)}, "
                                 "not a media file, directory or manifest")
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


def classify(path: str | os.PathLike[str], fmt: str | None = None, *,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Input:
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
            raise ManifestUnreadable(f"cannot read {display(p)} as a {fmt} manifest: "
                                     "it is a directory")
        return Input(p, "dir")
    if fmt == "dir":
        raise ManifestUnreadable(f"cannot read manifest {display(p)}: not a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ManifestUnreadable(f"cannot read {display(p)}: it is {_what(st.st_mode)}, "
                                 "not a media file, directory or manifest")
    suffix = os.path.splitext(p)[1].lower()
    if fmt is None and suffix[1:] in MEDIA_EXTENSIONS:
        return Input(p, "media")
    with _open_regular(p) as f:
        head = f.read(_SNIFF_BYTES).removeprefix(_BOM)
    if _binary(head):
        if fmt is not None:
            raise ManifestUnreadable(f"cannot read {display(p)} as a {fmt} manifest: "
                                     "it is binary (a media file?)")
        return Input(p, "media")
    if st.st_size > max_bytes:
        raise ManifestUnreadable(
            f"manifest {display(p)} is {human_bytes(st.st_size)}, over manifest.max_bytes "
            f"({human_bytes(max_bytes)}; BULKSCRIBE_MANIFEST__MAX_BYTES raises it)")
    return Input(p, fmt or _BY_SUFFIX.get(suffix) or _sniff(head))


def load_manifest(path: str | os.PathLike[str], *, fmt: str | None = None,
                  strict: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """Parse one INPUT; ``fmt`` overrides detection (one of :data:`FORMATS`)."""
    return load_inputs([path], fmt=fmt, strict=strict, max_bytes=max_bytes)


def load_inputs(paths: Sequence[str | os.PathLike[str]], *, fmt: str | None = None,
                strict: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """Parse INPUTs (media files, directories, manifests) into one batch, in order.

    Every INPUT is classified first, so an unusable one fails before any is read. When more
    than one directory is given, each one's ids start with its name (its name and a short
    hash of its path if two share a name), so the trees stay apart under ``--out``.
    """
    if not paths:
        raise ManifestUnreadable("no INPUT given: name media files, directories or manifests")
    if fmt is not None and len(paths) > 1:
        raise ManifestUnreadable("--manifest-format applies to a single manifest")
    inputs = [classify(p, fmt, max_bytes=max_bytes) for p in paths]
    prefixes = _dir_prefixes([i.path for i in inputs if i.kind == "dir"])
    parser = _Parser(strict=strict, several=len(inputs) > 1)
    warnings: list[str] = []
    for inp in inputs:
        if inp.kind == "dir":
            files, skipped = _walk(inp.path)
            warnings += skipped
            parser.add(((n, {"source": p}) for n, p in enumerate(files, 1)), inp,
                       base=inp.path, prefix=prefixes.get(inp.path))
        elif inp.kind == "media":
            parser.add([(1, {"source": inp.path})], inp, base=os.path.dirname(inp.path))
        else:
            with _open_regular(inp.path) as f:
                lines = _lines(f, inp.path, max_bytes, "surrogateescape" if inp.kind == "list"
                               else "strict")
                read = {"jsonl": _read_jsonl, "csv": _read_csv, "list": _read_list}[inp.kind]
                parser.add(read(lines, inp.path), inp, base=os.path.dirname(inp.path))
    one = inputs[0] if len(inputs) == 1 else None
    candidates = tuple(parser.candidates)
    return Manifest(
        path=one.path if one else "\n".join(i.path for i in inputs),
        fmt=one.kind if one else "inputs",
        entries=_settle(candidates, {}),
        warnings=(*warnings, *parser.warnings()),
        candidates=candidates,
    )


def entries_from_sources(sources: Sequence[str],
                         ) -> tuple[ManifestItem | ManifestProblem, ...]:
    """Items for a plain list of sources (scheduled runs over a bucket prefix), ids derived
    exactly as for a list manifest."""
    parser = _Parser(strict=False, several=False)
    parser.add([(n, {"source": src}) for n, src in enumerate(sources, start=1)],
               Input(os.getcwd(), "list"), base=os.getcwd())
    return _settle(tuple(parser.candidates), {})


def _dir_prefixes(dirs: Sequence[str]) -> dict[str, str]:
    if len(set(dirs)) < 2:
        return {}
    names = [os.path.basename(d) or "root" for d in dirs]
    out = {}
    for d, name in zip(dirs, names, strict=True):
        if names.count(name) > 1:
            name = f"{name}-{hashlib.sha256(os.fsencode(d)).hexdigest()[:8]}"
        out[d] = name
    return out


def _walk(root: str) -> tuple[list[str], list[str]]:
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
                skipped.append(f"skipped {display(d)}: it leads to a directory already walked "
                               "(a symlink loop?)")
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
                elif entry.is_file() and (os.path.splitext(entry.name)[1][1:].lower()
                                          in MEDIA_EXTENSIONS):
                    found.append(entry.path)
            except OSError:  # a dangling or looping symlink: nothing to transcribe there
                continue
    found.sort(key=os.fsencode)  # by bytes: the same order on every machine and locale
    return found, skipped


# --- readers: each yields (line_no, fields) or (line_no, error) -----------------------------


def _lines(f: IO[bytes], path: str, max_bytes: int,
           errors: str) -> Iterator[tuple[int, str, str | None]]:
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
            raise ManifestUnreadable(f"manifest {display(path)} is over manifest.max_bytes "
                                     f"({human_bytes(max_bytes)})")
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


def _cells(text: str) -> list[str]:
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
            return "csv" if "," in line and "source" in map(str.strip, _cells(line)) else "list"
        except csv.Error:
            return "list"
    return "list"


def _read_jsonl(lines: Iterable[tuple[int, str, str | None]], _path: str) -> Iterator[_Row]:
    for n, text, err in lines:
        if err:
            yield n, err
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield n, f"not valid JSON ({e.msg} at column {e.colno})"
            continue
        except (RecursionError, ValueError) as e:  # nested too deep; huge numbers
            yield n, f"not valid JSON ({type(e).__name__}: {str(e)[:80]})"
            continue
        yield (
            n,
            obj if isinstance(obj, dict) else f"expected a JSON object, got {text.strip()[:40]!r}",
        )


def _read_csv(lines: Iterable[tuple[int, str, str | None]], path: str) -> Iterator[_Row]:
    rows = iter(lines)
    first = next(rows, None)
    if first is None:
        return
    n0, text, err = first
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
    for n, text, err in rows:
        cells: list[str] = []
        try:
            cells = [] if err else [c.strip() for c in _cells(text)]
        except csv.Error as e:
            err = f"not valid CSV ({e})"
        if not err and len(cells) > len(header):
            err = f"{len(cells)} cells but the header has {len(header)} columns"
        # Empty cells mean absent; an unnamed column (trailing comma in the header) is ignored.
        yield n, err or {k: v for k, v in zip(header, cells, strict=False) if k and v}


def _read_list(lines: Iterable[tuple[int, str, str | None]], _path: str) -> Iterator[_Row]:
    # surrogateescape: a non-UTF-8 file name round-trips to its bytes via os.fsencode.
    for n, text, _ in lines:
        yield n, {"source": text.strip()}


# --- fields, ids and duplicates ------------------------------------------------------------


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


def _depth(v: Any, limit: int) -> bool:
    """Whether ``v`` nests deeper than ``limit``, without recursing."""
    stack = [(v, 0)]
    while stack:
        x, d = stack.pop()
        if d > limit:
            return True
        if isinstance(x, dict):
            stack += [(y, d + 1) for y in x.values()]
        elif isinstance(x, list):
            stack += [(y, d + 1) for y in x]
    return False


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(FIELDS | KNOWN_OPTIONS), n=1)
    return f": did you mean {close[0]!r}?" if close else ""


class _Parser:
    """Turns rows into candidates, remembering unknown field names for one warning each."""

    def __init__(self, *, strict: bool, several: bool) -> None:
        self.strict = strict
        self.several = several  # name the file in messages: lines of several INPUTs
        self.candidates: list[_Candidate] = []
        self.unknown: dict[str, tuple[str, int]] = {}  # name -> (first place, count)
        self.offset = 0  # line numbers of later INPUTs follow those of earlier ones

    def add(self, rows: Iterable[_Row], inp: Input, *, base: str,
            prefix: str | None = None) -> None:
        last = 0
        for n, f in rows:
            last = n
            if inp.kind in ("dir", "media"):
                where = display(f["source"]) if isinstance(f, dict) else f"{display(inp.path)}"
                ref = f"by {where}"
            else:
                label = f"{display(os.path.basename(inp.path))} line {n}" if self.several \
                    else f"line {n}"
                where, ref = label, f"on {label}"
            try:
                entry = self._entry(self.offset + n, where, f, base, prefix)
            except Exception as e:  # one line must never take the batch down with it
                entry = ManifestProblem(self.offset + n, FailureCode.MANIFEST_INVALID.value,
                                        f"{where}: cannot be read ({type(e).__name__})")
            self.candidates.append(_Candidate(entry, where, ref))
        self.offset += last

    def _entry(self, line_no: int, where: str, f: dict[str, Any] | str, base: str,
               prefix: str | None) -> ManifestItem | ManifestProblem:
        if isinstance(f, str):
            return ManifestProblem(line_no, FailureCode.MANIFEST_INVALID.value, f"{where}: {f}")
        typed, errs = self._parse(f, base, where)
        src, item_id = typed["source"], None
        if f.get("id") is not None:
            if err := id_error(f["id"]):
                errs.insert(0, err)
            else:
                item_id = f["id"]
        elif src is not None:
            parts = source_parts(src, base)
            item_id = derive_id([prefix, *parts] if prefix else parts)
        if errs:
            msg = f"{where}: " + "; ".join(errs)
            return ManifestProblem(line_no, FailureCode.MANIFEST_INVALID.value, msg, item_id, src)
        assert item_id is not None  # no errors: an id was given or derived from the source
        return ManifestItem(item_id=item_id, line_no=line_no, **typed)

    def _parse(self, f: dict[str, Any], base: str,
               where: str) -> tuple[dict[str, Any], list[str]]:
        """The typed ManifestItem fields of one line, and everything wrong with them."""
        if _depth(f, MAX_OPTIONS_DEPTH):
            return {"source": None}, [f"values nested deeper than {MAX_OPTIONS_DEPTH} levels"]
        # null and blank optional values mean absent, as empty CSV cells do
        f = {k: v for k, v in f.items()
             if k == "id" or not (v is None or (isinstance(v, str) and not v.strip()))}
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
        options = {k: v for k, v in f.items() if k not in FIELDS}
        for name in options:
            if name in KNOWN_OPTIONS:
                continue
            if self.strict:
                errs.append(f"unknown field {name!r}{_hint(name)}")
            first, count = self.unknown.get(name, (where, 0))
            self.unknown[name] = (first, count + 1)
        size = len(json.dumps(options, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        if size > MAX_OPTIONS_BYTES:
            errs.append(f"options take {human_bytes(size)} as JSON, over the limit of "
                        f"{MAX_OPTIONS_BYTES // 1024} KiB")
        out["options"] = tuple(sorted(options.items()))
        return out, errs

    def warnings(self) -> list[str]:
        if self.strict:
            return []
        return [
            f"unknown field {name!r} on {first}"
            f"{f' and {count - 1} more line(s)' if count > 1 else ''}{_hint(name)}; "
            "it is passed to the provider as an option (--strict refuses it)"
            for name, (first, count) in self.unknown.items()
        ]


def _settle(candidates: Sequence[_Candidate],
            owners: Mapping[str, str]) -> tuple[ManifestItem | ManifestProblem, ...]:
    """Entries with each id kept by one item: the one whose source already owns it in
    ``owners``, else the first; the others fail with duplicate_id naming the keeper."""
    from pipeline.batches import storable

    keeper: dict[str, int] = {}
    for i, c in enumerate(candidates):
        e = c.entry
        if not isinstance(e, ManifestItem):
            continue
        held = keeper.get(e.item_id)
        owner = owners.get(e.item_id)
        if held is None or (owner == storable(e.source)
                            != storable(candidates[held].entry.source or "")):
            keeper[e.item_id] = i
    out: list[ManifestItem | ManifestProblem] = []
    for i, c in enumerate(candidates):
        e = c.entry
        if isinstance(e, ManifestItem) and keeper[e.item_id] != i:
            first = candidates[keeper[e.item_id]]
            msg = f"{c.where}: id {e.item_id!r} is already used {first.ref}"
            out.append(ManifestProblem(e.line_no, FailureCode.DUPLICATE_ID.value, msg,
                                       e.item_id, e.source))
        else:
            out.append(e)
    return tuple(out)
