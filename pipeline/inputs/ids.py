"""Item ids: what an explicit id may be, and how one is derived from a source's path.

An id is also the item's output path under ``--out`` (``day2/meeting`` writes
``day2/meeting.json``), so it depends only on its own line or file, never on its neighbours:
adding a file to a folder never renames or re-transcribes what is already there. Lengths are
checked in encoded bytes, the unit file systems count, before any work is done.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

# The key of a manifest line that never became an item ("@line42"). '@' cannot start a
# manifest id, so these keys never collide with real ones.
PROBLEM_PREFIX = "@"


def is_problem_key(key: str) -> bool:
    """Whether an item key stands for a manifest line that never became an item."""
    return key.startswith(PROBLEM_PREFIX)


__all__ = [
    "ID_RULE",
    "MAX_ID_BYTES",
    "MAX_PART_BYTES",
    "derive_id",
    "id_error",
    "is_problem_key",
    "source_parts",
]

# The longest suffix a writer appends to an id's last part (".json"; see render.FORMATS).
# Temporary files use fixed names (render.atomic_write), so they need no room of their own.
OUTPUT_SUFFIX_BYTES = len(".json")
MAX_PART_BYTES = 255 - OUTPUT_SUFFIX_BYTES  # NAME_MAX on Linux, macOS and Windows file systems
MAX_ID_BYTES = 1024  # the whole relative path; well under PATH_MAX (4096) with a long --out
ID_RULE = (
    "ids are '/'-separated parts of letters, digits, '.', '_' and '-'; a part must not be "
    f"empty, start with '.' or '-' or contain '..', and is at most {MAX_PART_BYTES} bytes in "
    f"UTF-8, the whole id at most {MAX_ID_BYTES} bytes"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HASH_LEN = 8


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


# Letters and digits of any script, '.', '_' and '-': the regular expression's \w is
# exactly str.isalnum() or '_', matched in C rather than a character at a time in Python.
_PART_CHARS = re.compile(r"[\w.-]+")


def _part_ok(p: str) -> bool:
    return (
        bool(p)
        and p[0] not in ".-"
        and ".." not in p
        and _PART_CHARS.fullmatch(p) is not None
        and _nbytes(p) <= MAX_PART_BYTES
    )


def id_error(v: object) -> str | None:
    """Why ``v`` cannot be an id (an explicit one from a manifest, or a key to write), or None."""
    if not isinstance(v, str):
        return f"id must be a string, got {v!r}"
    if _nbytes(v) > MAX_ID_BYTES or not all(_part_ok(p) for p in v.split("/")):
        return f"id {v!r} is not a safe file name: {ID_RULE}"
    return None


def source_parts(source: str, base: str | None) -> list[str]:
    """The path components an id is derived from.

    A local path (or ``file://``) inside ``base`` (the manifest's or walked directory) gives
    its path relative to ``base``; any other local path its components after ``/``. A URL
    gives its decoded path after the host (``s3://bucket/k/a.wav`` → ``k``, ``a.wav``), or
    after ``base`` when that is a URL prefix holding it (scheduled runs over a bucket
    prefix); the query and fragment are ignored.
    """
    if base is not None and _SCHEME.match(base):
        b, s = urlsplit(base), urlsplit(source)
        if b.scheme.lower() == "file":
            base = unquote(b.path)
        else:
            root = b.path.rstrip("/") + "/"
            if (s.scheme.lower(), s.netloc) == (b.scheme.lower(), b.netloc) and s.path.startswith(
                root
            ):
                return _clean([unquote(p) for p in s.path[len(root) :].split("/")])
            base = None
    m = _SCHEME.match(source)
    if m is not None and m.group(1).lower() != "file":
        return _clean([unquote(p) for p in urlsplit(source).path.split("/")])  # %2F: in a part
    path = unquote(urlsplit(source).path) if m is not None else source
    base = os.path.normpath(base) if base is not None else None
    path = os.path.normpath(os.path.join(base or "/", path))
    if base is not None and os.path.commonpath([path, base]) == base and path != base:
        path = os.path.relpath(path, base)
    return _clean(path.split("/"))


def _clean(parts: list[str]) -> list[str]:
    return [p for p in parts if p not in ("", ".")]


def _sanitize(part: str, empty: str) -> str:
    s = "".join(c if c.isalnum() or c in "._-" else "_" for c in part)
    while ".." in s:
        s = s.replace("..", "._")
    return s.lstrip(".-") or empty


def _fit(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` bytes, stably: a cut string ends in ``-`` and a hash of all of it."""
    if _nbytes(s) <= limit:
        return s
    digest = hashlib.sha256(s.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_LEN]
    head = s.encode("utf-8")[: limit - _HASH_LEN - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def derive_id(parts: Sequence[str]) -> str:
    """An id from path components: the file stem, its directories kept as ``/``-parts.

    Unsafe characters become ``_``; a part over :data:`MAX_PART_BYTES` is cut and given a
    short hash, and a path over :data:`MAX_ID_BYTES` keeps its file name under one hashed
    directory part, so a long name still gives the same id on every run.
    """
    if not parts:
        return "item"
    *dirs, name = parts
    stem = os.path.splitext(name)[0]
    safe = [_fit(_sanitize(d, "_"), MAX_PART_BYTES) for d in dirs]
    safe.append(_fit(_sanitize(stem, "item"), MAX_PART_BYTES))
    item_id = "/".join(safe)
    if _nbytes(item_id) > MAX_ID_BYTES:
        digest = hashlib.sha256("/".join(safe[:-1]).encode("utf-8")).hexdigest()[:_HASH_LEN]
        item_id = f"_long-{digest}/{safe[-1]}"
    return item_id
