"""A cache of ffprobe reports, keyed by a file's path, size and mtime.

``bulkscribe plan`` probes every file; the ``run`` that follows asks the same questions. The
cache sits in front of ffprobe as a :data:`pipeline.stages.probe.ReportSource`, so what is
cached is ffprobe's own answer (its JSON report, or its failure), never the verdict: limits,
channel checks and messages are applied afresh by :func:`read_probe` on every use, and a
changed setting can never be answered from a stale judgement. A file whose size or mtime
changed is probed again. A timed-out ffprobe is not cached (it may succeed on a quieter
machine). A plain PCM WAV is not given to ffprobe at all: its report is computed from its
header (:mod:`pipeline.planning.wav_header`, the fields ffprobe gives, with the same values).

It is one SQLite file (WAL, a busy timeout, one connection per thread), safe to share
between a plan and a run, or several runs, at the same time. Where it lives:
``$XDG_CACHE_HOME/bulkscribe/probe.db`` (``~/.cache/...``) by default, or
``OUT/.bulkscribe/probe.db`` for a plan given ``--out OUT`` and any run into ``OUT`` once
that file exists.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.log import get_logger
from pipeline.media import MediaCommandError
from pipeline.planning.wav_header import read_wav_report
from pipeline.stages.probe import ReportSource, ffprobe_report

HeaderReader = Callable[[Path, os.stat_result], Mapping[str, Any] | None]

log = get_logger("bulkscribe.probe")

_SCHEMA = """CREATE TABLE IF NOT EXISTS probes (
    path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, stored_at REAL NOT NULL)"""


def default_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bulkscribe" / "probe.db"


def cache_path_for(out_dir: Path | None) -> Path:
    """``OUT/.bulkscribe/probe.db`` when a plan or run names an output directory that has
    one (a plan with ``--out`` creates it), else the user's cache."""
    if out_dir is not None:
        candidate = out_dir / ".bulkscribe" / "probe.db"
        if candidate.is_file():
            return candidate
    return default_cache_path()


class ProbeCache:
    """ffprobe reports by (path, size, mtime); ``reports`` is the ReportSource to inject."""

    def __init__(
        self,
        path: Path,
        source: ReportSource = ffprobe_report,
        headers: HeaderReader | None = read_wav_report,
    ) -> None:
        self.path = path
        self._source = source
        self._headers = headers
        self._local = threading.local()
        self._lock = threading.Lock()
        self.hits = 0  # answered from the cache
        self.read = 0  # answered from the file's header (plain WAV), as ffprobe would
        self.ran = 0  # ffprobe actually run
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn().execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def reports(self, path: Path, st: os.stat_result) -> Mapping[str, Any]:
        key = os.fsencode(os.path.abspath(path))
        row = (
            self._conn()
            .execute(
                "SELECT kind, body FROM probes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (key, st.st_size, st.st_mtime_ns),
            )
            .fetchone()
        )
        if row is not None:
            with self._lock:
                self.hits += 1
            body = json.loads(row[1])
            if row[0] == "error":
                raise MediaCommandError(body["argv"], body["returncode"], body["stderr"])
            return dict(body)
        found = self._headers(path, st) if self._headers is not None else None
        if found is not None:
            with self._lock:
                self.read += 1
            self._store(key, st, "report", dict(found))
            return found
        with self._lock:
            self.ran += 1
        log.info("probe.ran", path=str(path))
        try:
            report = self._source(path, st)
        except MediaCommandError as exc:
            if not exc.timed_out:
                self._store(
                    key,
                    st,
                    "error",
                    {"argv": exc.argv, "returncode": exc.returncode, "stderr": exc.stderr},
                )
            raise
        self._store(key, st, "report", dict(report))
        return report

    def _store(self, key: bytes, st: os.stat_result, kind: str, body: Mapping[str, Any]) -> None:
        try:
            self._conn().execute(
                "INSERT OR REPLACE INTO probes (path, size, mtime_ns, kind, body, stored_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, st.st_size, st.st_mtime_ns, kind, json.dumps(body), time.time()),
            )
        except sqlite3.Error as exc:  # a cache that cannot be written only costs speed
            log.warning("probe.cache_unwritable", path=str(self.path), error=str(exc))


def open_cache(path: Path) -> ProbeCache | None:
    """The cache at ``path``, or None (with a warning) when it cannot be opened: probing
    then simply runs ffprobe every time."""
    try:
        return ProbeCache(path)
    except (OSError, sqlite3.Error) as exc:
        log.warning("probe.cache_unavailable", path=str(path), error=str(exc))
        return None
