"""What ``run`` and ``submit`` are given (media files, directories, manifests) into items.

Each INPUT is a media file (one item), a directory (walked recursively for media files, its
tree mirrored in the ids) or a manifest (JSONL, CSV or a plain list of sources). A batch names
thousands of files, so one broken line must not stop it: every bad line becomes a
:class:`ManifestProblem` that fails on its own, in input order. Only an INPUT that cannot be
used at all raises :class:`ManifestUnreadable` (the CLI's exit 2). Pure apart from reading the
files and walking the directories.
"""

from __future__ import annotations

import csv
import difflib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.asr.catalog import KNOWN_OPTIONS
from pipeline.errors import FailureCode
from pipeline.inputs.classify import (
    DEFAULT_MAX_BYTES,
    FORMATS,
    MAX_LINE_BYTES,
    MEDIA_EXTENSIONS,
    Input,
    ManifestUnreadable,
    cells,
    classify,
    dir_prefixes,
    display,
    lines,
    open_regular,
    walk,
)
from pipeline.inputs.ids import derive_id, id_error, source_parts
from pipeline.models import ManifestItem, ManifestProblem, human_bytes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MAX_LINE_BYTES",
    "MAX_OPTIONS_BYTES",
    "MEDIA_EXTENSIONS",
    "Input",
    "InputStream",
    "Manifest",
    "ManifestUnreadable",
    "classify",
    "display",
    "entries_from_sources",
    "load_inputs",
    "load_manifest",
]

FIELDS = frozenset({"id", "source", "language", "start_s", "end_s", "model", "channel"})
MAX_OPTIONS_BYTES = 16 * 1024  # an item's options as JSON
# One encoder for every line (json.dumps with an option builds a new one per call).
_OPTIONS_JSON = json.JSONEncoder(ensure_ascii=False).encode
MAX_OPTIONS_DEPTH = 32  # nesting of option values; deeper JSON exhausts the stack downstream
_SCHEMES = frozenset({"file", "http", "https", "s3", "oss"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")

_Row = tuple[int, "dict[str, Any] | str"]  # (line_no, fields) or (line_no, what is wrong)


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


def load_manifest(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Manifest:
    """Parse one INPUT; ``fmt`` overrides detection (one of :data:`FORMATS`)."""
    return load_inputs([path], fmt=fmt, strict=strict, max_bytes=max_bytes)


def load_inputs(
    paths: Sequence[str | os.PathLike[str]],
    *,
    fmt: str | None = None,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Manifest:
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
    prefixes = dir_prefixes([i.path for i in inputs if i.kind == "dir"])
    parser = _Parser(strict=strict, several=len(inputs) > 1)
    warnings: list[str] = []
    for inp in inputs:
        if inp.kind == "dir":
            files, skipped = walk(inp.path)
            warnings += skipped
            parser.add(
                ((n, {"source": p}) for n, p in enumerate(files, 1)),
                inp,
                base=inp.path,
                prefix=prefixes.get(inp.path),
            )
        elif inp.kind == "media":
            parser.add([(1, {"source": inp.path})], inp, base=os.path.dirname(inp.path))
        else:
            with open_regular(inp.path) as f:
                stream = lines(
                    f, inp.path, max_bytes, "surrogateescape" if inp.kind == "list" else "strict"
                )
                read = {"jsonl": _read_jsonl, "csv": _read_csv, "list": _read_list}[inp.kind]
                parser.add(read(stream, inp.path), inp, base=os.path.dirname(inp.path))
    one = inputs[0] if len(inputs) == 1 else None
    candidates = tuple(parser.candidates)
    return Manifest(
        path=one.path if one else "\n".join(i.path for i in inputs),
        fmt=one.kind if one else "inputs",
        entries=_settle(candidates, {}),
        warnings=(*warnings, *parser.warnings()),
        candidates=candidates,
    )


class InputStream:
    """INPUTs read one entry at a time, for intakes too large to hold (``submit``).

    Iterating yields items and problems in input order with duplicate ids *not* settled:
    the ledger's unique key does that as rows go in, and :meth:`ref` names the line that
    holds an id first. :meth:`warnings` is complete once the stream is exhausted. Remote
    INPUTs (``s3://bucket/prefix/``, an S3 Inventory ``manifest.json``) are listed through
    ``client`` (scheme -> boto3 S3 client).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        fmt: str | None = None,
        strict: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        client: Any = None,
    ) -> None:
        from pipeline.inputs.listing import is_inventory, is_remote

        if not paths:
            raise ManifestUnreadable("no INPUT given: name media files, directories or manifests")
        if fmt is not None and len(paths) > 1:
            raise ManifestUnreadable("--manifest-format applies to a single manifest")
        self.inputs: list[Input] = []
        for p in paths:
            p = os.fsdecode(p)
            if is_remote(p):
                kind = "inventory" if is_inventory(p) else "listing"
                self.inputs.append(Input(p if kind == "inventory" else p.rstrip("/") + "/", kind))
            elif is_inventory(p) and fmt is None and os.path.isfile(p):
                self.inputs.append(Input(os.path.abspath(p), "inventory"))
            else:
                self.inputs.append(classify(p, fmt, max_bytes=max_bytes))
        self.max_bytes = max_bytes
        self.client = client
        self.parser = _Parser(strict=strict, several=len(self.inputs) > 1)
        self.extra: list[str] = []
        self.spans: list[tuple[int, Input]] = []  # (line offset, INPUT) as each is read
        self._entries: Iterator[ManifestItem | ManifestProblem] | None = None
        self._first: list[ManifestItem | ManifestProblem] = []
        one = self.inputs[0] if len(self.inputs) == 1 else None
        self.path = one.path if one else "\n".join(i.path for i in self.inputs)
        self.fmt = one.kind if one else "inputs"

    def open(self) -> None:
        """Read up to the first entry, so that a listing or report that cannot be read
        fails here (:class:`ManifestUnreadable`), before anything is written."""
        self._entries = self._read()
        self._first = list(itertools.islice(self._entries, 1))

    def __iter__(self) -> Iterator[ManifestItem | ManifestProblem]:
        if self._entries is None:
            self.open()
        yield from self._first
        yield from self._entries or ()

    def _read(self) -> Iterator[ManifestItem | ManifestProblem]:
        from pipeline.inputs.listing import inventory_rows, listing_rows

        prefixes = dir_prefixes([i.path for i in self.inputs if i.kind == "dir"])
        for inp in self.inputs:
            self.spans.append((self.parser.offset, inp))
            prefix = None
            if inp.kind == "dir":
                files, skipped = walk(inp.path)
                self.extra += skipped
                rows: Iterable[_Row] = ((n, {"source": p}) for n, p in enumerate(files, 1))
                base, prefix = inp.path, prefixes.get(inp.path)
            elif inp.kind == "media":
                rows, base = [(1, {"source": inp.path})], os.path.dirname(inp.path)
            elif inp.kind == "listing":
                rows, base = listing_rows(inp.path, self.client), inp.path
            elif inp.kind == "inventory":
                rows, base = inventory_rows(inp.path, self.client), None
            else:
                yield from self._manifest(inp)
                continue
            for c in self.parser.parse(rows, inp, base=base or "/", prefix=prefix):
                yield c.entry

    def _manifest(self, inp: Input) -> Iterator[ManifestItem | ManifestProblem]:
        with open_regular(inp.path) as f:
            mode = "surrogateescape" if inp.kind == "list" else "strict"
            read = {"jsonl": _read_jsonl, "csv": _read_csv, "list": _read_list}[inp.kind]
            stream = read(lines(f, inp.path, self.max_bytes, mode), inp.path)
            for c in self.parser.parse(stream, inp, base=os.path.dirname(inp.path)):
                yield c.entry

    def ref(self, line_no: int, source: str) -> str:
        """How a later duplicate names the entry on (global) ``line_no``: "on line 3",
        "on m.jsonl line 3", or "by /in/a.wav" for a file of a directory."""
        offset, inp = next(
            ((o, i) for o, i in reversed(self.spans) if o < line_no), (0, self.inputs[0])
        )
        if inp.kind in ("dir", "media", "listing", "inventory"):
            return f"by {display(source)}"
        n = line_no - offset
        if self.parser.several:
            return f"on {display(os.path.basename(inp.path))} line {n}"
        return f"on line {n}"

    def where(self, line_no: int, source: str) -> str:
        """How the entry on ``line_no`` names itself: "line 3", or the file's path."""
        return self.ref(line_no, source).split(" ", 1)[1]

    def warnings(self) -> list[str]:
        return [*self.extra, *self.parser.warnings()]


def entries_from_sources(
    sources: Sequence[str],
    root: str | None = None,
) -> tuple[ManifestItem | ManifestProblem, ...]:
    """Items for a plain list of sources (scheduled runs over a bucket prefix), ids derived
    as for a list manifest, relative to ``root`` (a URL prefix or directory) when given."""
    parser = _Parser(strict=False, several=False)
    parser.add(
        [(n, {"source": src}) for n, src in enumerate(sources, start=1)],
        Input(os.getcwd(), "list"),
        base=root or os.getcwd(),
    )
    return _settle(tuple(parser.candidates), {})


# --- readers: each yields (line_no, fields) or (line_no, error) -----------------------------


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
        except RecursionError:  # escapes JSONDecodeError; would abort the whole batch
            yield n, "not valid JSON (nested too deep to parse)"
            continue
        except ValueError as e:  # e.g. an integer with more digits than Python converts
            yield n, f"not valid JSON ({str(e)[:80]})"
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
        header = [h.strip() for h in cells(text)]
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
        row: list[str] = []
        try:
            row = [] if err else [c.strip() for c in cells(text)]
        except csv.Error as e:
            err = f"not valid CSV ({e})"
        if not err and len(row) > len(header):
            err = f"{len(row)} cells but the header has {len(header)} columns"
        # Empty cells mean absent; an unnamed column (trailing comma in the header) is ignored.
        yield n, err or {k: v for k, v in zip(header, row, strict=False) if k and v}


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

    def add(
        self, rows: Iterable[_Row], inp: Input, *, base: str, prefix: str | None = None
    ) -> None:
        self.candidates.extend(self.parse(rows, inp, base=base, prefix=prefix))

    def parse(
        self, rows: Iterable[_Row], inp: Input, *, base: str, prefix: str | None = None
    ) -> Iterator[_Candidate]:
        """The candidates of one INPUT's rows, one at a time (duplicates not settled)."""
        last = 0
        for n, f in rows:
            last = n
            if inp.kind in ("dir", "media", "listing", "inventory"):
                where = display(f["source"]) if isinstance(f, dict) else f"{display(inp.path)}"
                ref = f"by {where}"
            else:
                label = (
                    f"{display(os.path.basename(inp.path))} line {n}"
                    if self.several
                    else f"line {n}"
                )
                where, ref = label, f"on {label}"
            try:
                entry = self._entry(self.offset + n, where, f, base, prefix)
            except Exception as e:  # one line must never take the batch down with it
                entry = ManifestProblem(
                    self.offset + n,
                    FailureCode.MANIFEST_INVALID.value,
                    f"{where}: cannot be read ({type(e).__name__})",
                )
            yield _Candidate(entry, where, ref)
        self.offset += last

    def _entry(
        self, line_no: int, where: str, f: dict[str, Any] | str, base: str, prefix: str | None
    ) -> ManifestItem | ManifestProblem:
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

    def _parse(self, f: dict[str, Any], base: str, where: str) -> tuple[dict[str, Any], list[str]]:
        """The typed ManifestItem fields of one line, and everything wrong with them."""
        if _depth(f, MAX_OPTIONS_DEPTH):
            return {"source": None}, [f"values nested deeper than {MAX_OPTIONS_DEPTH} levels"]
        # null and blank optional values mean absent, as empty CSV cells do
        f = {
            k: v
            for k, v in f.items()
            if k == "id" or not (v is None or (isinstance(v, str) and not v.strip()))
        }
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
        size = len(_OPTIONS_JSON(options).encode("utf-8", "surrogateescape")) if options else 2
        if size > MAX_OPTIONS_BYTES:
            errs.append(
                f"options take {human_bytes(size)} as JSON, over the limit of "
                f"{MAX_OPTIONS_BYTES // 1024} KiB"
            )
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


def _settle(
    candidates: Sequence[_Candidate], owners: Mapping[str, str]
) -> tuple[ManifestItem | ManifestProblem, ...]:
    """Entries with each id kept by one item: the one whose source already owns it in
    ``owners``, else the first; the others fail with duplicate_id naming the keeper."""
    from pipeline.inputs.batches import storable

    keeper: dict[str, int] = {}
    for i, c in enumerate(candidates):
        e = c.entry
        if not isinstance(e, ManifestItem):
            continue
        held = keeper.get(e.item_id)
        owner = owners.get(e.item_id)
        if held is None or (
            owner == storable(e.source) != storable(candidates[held].entry.source or "")
        ):
            keeper[e.item_id] = i
    out: list[ManifestItem | ManifestProblem] = []
    for i, c in enumerate(candidates):
        e = c.entry
        if isinstance(e, ManifestItem) and keeper[e.item_id] != i:
            first = candidates[keeper[e.item_id]]
            msg = f"{c.where}: id {e.item_id!r} is already used {first.ref}"
            out.append(
                ManifestProblem(e.line_no, FailureCode.DUPLICATE_ID.value, msg, e.item_id, e.source)
            )
        else:
            out.append(e)
    return tuple(out)
