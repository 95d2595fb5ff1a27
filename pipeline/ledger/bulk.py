"""Entering a batch's items in large chunks: the intake of a million-line manifest.

Each chunk is staged in a temporary table (PostgreSQL: COPY; SQLite: executemany), then
moved into ``items`` and ``attempts`` with two INSERT ... SELECT statements and committed,
so the workers can take the first items while the rest are still coming. On PostgreSQL a
batch that held no rows when its intake began skips the stage: its chunks are COPYed
straight into both tables, until one repeats an id. The ledger's
unique key (batch, id) settles repeated ids: a staged row whose id is already held comes
back as a clash naming the line that holds it, and the caller decides whether that is the
same line entered by an earlier, interrupted run (kept) or a duplicate id.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text, update

from pipeline.ledger.repo import ItemSeed, utcnow
from pipeline.ledger.tables import attempts, batches, items
from pipeline.ledger.values import ItemRequest
from pipeline.states import ItemState

__all__ = [
    "Clash",
    "Collectable",
    "Entered",
    "bulk_intake",
    "collect",
    "collectable",
    "holder_of",
    "set_intake",
    "tidy",
]

# One encoder for every row (json.dumps with options builds a new one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, default=str).encode
_STAGE = "bulkscribe_intake"
_COLS = (
    "id",
    "key",
    "line_no",
    "source",
    "spec",
    "fingerprint",
    "source_stamp",
    "state",
    "error_code",
    "error_message",
    "model",
    "options",
)
_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (id varchar(64), key text, line_no integer,"
    " source text, spec {json}, fingerprint varchar(64), source_stamp varchar(100),"
    " state varchar(20), error_code varchar(40), error_message text, model varchar(100),"
    " options {json}){tail}"
)
_PICK = {  # one row per id within a chunk: the earliest line's
    "postgresql": f"SELECT DISTINCT ON (key) * FROM {_STAGE} ORDER BY key, line_no",
    "sqlite": f"SELECT * FROM {_STAGE} s WHERE s.line_no = "
    f"(SELECT min(t.line_no) FROM {_STAGE} t WHERE t.key = s.key)",
}
_INSERT_ITEMS = (
    "INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, source_stamp,"
    " state, attempt, tries, polls, error_code, error_message, error_retryable, created_at,"
    " updated_at,"
    " finished_at) SELECT p.id, :batch, p.key, p.line_no, p.source, p.spec, p.fingerprint,"
    " p.source_stamp, p.state, 1, 0, 0, p.error_code, p.error_message,"
    # A line that cannot become an item is a permanent failure (manifest_invalid, ...).
    " CASE WHEN p.error_code IS NULL THEN NULL ELSE (1 = 0) END, :now, :now,"
    " CASE WHEN p.state = 'PENDING' THEN NULL ELSE :now END FROM ({pick}) p"
    " WHERE true ON CONFLICT (batch_id, key) DO NOTHING"
)
_INSERT_ATTEMPTS = (
    "INSERT INTO attempts (item_id, number, engine, model, options, state, started_at,"
    " finished_at, timings) SELECT s.id, 1, :engine, s.model, s.options,"
    " CASE WHEN s.state = 'PENDING' THEN 'RUNNING' ELSE s.state END, :now,"
    " CASE WHEN s.state = 'PENDING' THEN NULL ELSE :now END, {empty}"
    f" FROM {_STAGE} s JOIN items i ON i.id = s.id RETURNING item_id, state"
)
# PostgreSQL: items and their first attempts in one statement (the items' INSERT as a
# data-modifying CTE), with no lookup of the rows just inserted.
_INSERT_BOTH_PG = (
    "WITH new AS (" + _INSERT_ITEMS + " RETURNING id, state)"
    " INSERT INTO attempts (item_id, number, engine, model, options, state, started_at,"
    " finished_at, timings) SELECT n.id, 1, :engine, s.model, s.options,"
    " CASE WHEN n.state = 'PENDING' THEN 'RUNNING' ELSE n.state END, :now,"
    " CASE WHEN n.state = 'PENDING' THEN NULL ELSE :now END, CAST('{{}}' AS json)"
    f" FROM new n JOIN {_STAGE} s ON s.id = n.id RETURNING item_id, state"
)
# The fast way into a batch that held no rows when its intake began (PostgreSQL): COPY
# straight into both tables, the columns the INSERT ... SELECT above would have written.
_COPY_ITEMS = (
    "COPY items (id, batch_id, key, line_no, source, spec, fingerprint, source_stamp, state,"
    " attempt, tries, polls, error_code, error_message, error_retryable, created_at,"
    " updated_at, finished_at) FROM STDIN"
)
_COPY_ATTEMPTS = (
    "COPY attempts (item_id, number, engine, model, options, state, started_at, finished_at,"
    " timings) FROM STDIN"
)
_CLASHES = (
    f"SELECT s.line_no, s.key, i.line_no, i.source FROM {_STAGE} s"
    " JOIN items i ON i.batch_id = :batch AND i.key = s.key WHERE i.id <> s.id"
)


def chunk_ids(n: int) -> list[str]:
    """``n`` new item ids that sort after those of every chunk made before, in order: the
    time in milliseconds (12 hex digits), the place in the chunk (5), 15 random digits; 32
    in all, as a UUID's hex. Each chunk's rows then go to the right-hand edge of the
    primary key and of every index and lookup keyed by item id (the attempts' unique key,
    their foreign key checks): pages already in the database's cache. Random ids sent each
    row to a page of its own, and past a few hundred thousand rows those pages no longer
    fit in PostgreSQL's default 128 MB of shared buffers. The random digits come from one
    read of the system's random source: a read per row is a system call each, and every
    one gives up the GIL to the thread parsing the manifest."""
    if n > 0x100000:
        raise ValueError(f"a chunk of {n} rows: at most {0x100000} get ids at once")
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    noise = os.urandom(8 * n).hex()
    return [f"{stamp}{i:05x}{noise[16 * i + 1 : 16 * i + 16]}" for i in range(n)]


@dataclass(frozen=True, slots=True)
class Clash:
    """A staged seed whose id the batch already holds, and the line that holds it."""

    seed: ItemSeed
    held_line: int
    held_source: str


@dataclass(frozen=True, slots=True)
class Entered:
    pending: tuple[str, ...]  # ledger ids of new items the workers can take
    created: int
    clashes: tuple[Clash, ...]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Seeds made ready to enter (:meth:`BulkIntake.prepare`)."""

    seeds: Sequence[ItemSeed]
    rows: list[tuple[Any, ...]]  # the staging table's columns (_COLS)
    now: Any  # entered at: a datetime (PostgreSQL) or its text (SQLite)
    copy_items: bytes | None = None  # COPY text of the rows, for a direct COPY
    copy_attempts: bytes | None = None


# COPY's text format: a backslash, tab, newline or carriage return in a value is escaped,
# and \N is NULL (https://www.postgresql.org/docs/current/sql-copy.html, "Text Format").
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _field(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def _copy_text(
    rows: Sequence[tuple[Any, ...]], batch_id: str, engine: str, now: datetime
) -> tuple[bytes, bytes]:
    """The COPY text of a chunk's items and of their first attempts: the columns of
    ``_COPY_ITEMS`` and ``_COPY_ATTEMPTS``. Ids, line numbers, states and times are made
    here and need no escaping; everything from the manifest is escaped."""
    at = now.isoformat()
    batch, engine_text = _field(batch_id), _field(engine)
    item_lines, attempt_lines = [], []
    for id_, key, line, source, spec, fp, stamp, state, code, msg, model, options in rows:
        if state == "PENDING":
            ended, run, retryable = "\\N", "RUNNING", "\\N"
        else:  # a refused line: final
            ended, run, retryable = at, state, "\\N" if code is None else "f"
        item_lines.append(
            f"{id_}\t{batch}\t{_field(key)}\t{line}\t{_field(source)}\t{_field(spec)}\t{_field(fp)}"
            f"\t{_field(stamp)}\t{state}\t1\t0\t0\t{_field(code)}\t{_field(msg)}"
            f"\t{retryable}\t{at}\t{at}\t{ended}\n"
        )
        attempt_lines.append(
            f"{id_}\t1\t{engine_text}\t{_field(model)}\t{_field(options)}\t{run}\t{at}"
            f"\t{ended}\t{{}}\n"
        )
    return "".join(item_lines).encode(), "".join(attempt_lines).encode()


class BulkIntake:
    """One connection entering one batch's items, a committed chunk per :meth:`enter`."""

    def __init__(self, conn: Connection, batch_id: str, *, engine: str, model: str) -> None:
        self.conn = conn
        self.batch_id = batch_id
        self.engine = engine
        self.model = model
        self.pg = conn.dialect.name == "postgresql"
        json_type = "json" if self.pg else "text"
        tail = " ON COMMIT DELETE ROWS" if self.pg else ""
        with conn.begin():
            conn.execute(text(_DDL.format(json=json_type, tail=tail)))
            if not self.pg:
                conn.execute(text(f"CREATE INDEX IF NOT EXISTS {_STAGE}_key ON {_STAGE} (key)"))
                conn.execute(text(f"DELETE FROM {_STAGE}"))
        pick = _PICK["postgresql" if self.pg else "sqlite"]
        self._items = text(_INSERT_ITEMS.format(pick=pick))
        self._attempts = text(_INSERT_ATTEMPTS.format(empty="'{}'"))
        self._both = text(_INSERT_BOTH_PG.format(pick=pick))
        self._clashes = text(_CLASHES)
        # A batch with no rows yet takes each chunk by COPY until a chunk repeats an id (a
        # resumed intake finds its rows there and stages every chunk from the start).
        self.direct = (
            self.pg
            and not conn.execute(
                select(items.c.id).where(items.c.batch_id == batch_id).limit(1)
            ).first()
        )
        conn.commit()

    def _row(self, item_id: str, seed: ItemSeed) -> tuple[Any, ...]:
        state = ItemState.FAILED if seed.failure else ItemState.PENDING
        code, message = seed.failure or (None, None)
        spec: Mapping[str, Any] = seed.spec
        request = ItemRequest.decode(spec)
        return (
            item_id,
            seed.key,
            seed.line_no,
            seed.source,
            _JSON(dict(spec)),
            seed.fingerprint,
            seed.source_stamp,
            state.value,
            code,
            message,
            request.model_or(self.model),
            _JSON(dict(request.options)) if request.options else "{}",
        )

    def _stage(self, rows: list[tuple[Any, ...]]) -> None:
        if self.pg:
            cur = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cur.copy(f"COPY {_STAGE} ({', '.join(_COLS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in _COLS)
        self.conn.exec_driver_sql(
            f"INSERT INTO {_STAGE} ({', '.join(_COLS)}) VALUES ({marks})", rows
        )

    def _copy_in(self, chunk: Chunk) -> bool:
        """COPY the chunk into ``items`` and ``attempts`` and commit: the database's own
        floor, with no staging table, sort or join. False, with nothing written, if an id
        in it is held already or repeated within it; the chunk is then staged, and so is
        every later one."""
        import psycopg

        assert chunk.copy_items is not None and chunk.copy_attempts is not None
        cur = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with self.conn.begin():
                with cur.copy(_COPY_ITEMS) as copy:
                    copy.write(chunk.copy_items)
                with cur.copy(_COPY_ATTEMPTS) as copy:
                    copy.write(chunk.copy_attempts)
        except psycopg.errors.UniqueViolation:
            self.direct = False
            return False
        return True

    def prepare(self, seeds: Sequence[ItemSeed]) -> Chunk:
        """``seeds`` made ready to enter, in the calling thread: ids, rows and, while the
        batch takes its chunks by COPY, the text COPY reads. Done here, not in
        :meth:`enter_chunk`, so the thread entering chunks needs the GIL only to hand bytes
        to psycopg: the database is not left waiting for rows while the manifest is
        parsed."""
        ids = chunk_ids(len(seeds))
        rows = [self._row(item_id, s) for item_id, s in zip(ids, seeds, strict=True)]
        now = utcnow()
        if not self.pg:  # as SQLAlchemy stores DateTime on SQLite
            return Chunk(seeds, rows, now.replace(tzinfo=None).isoformat(" "))
        if not self.direct:
            return Chunk(seeds, rows, now)
        items_text, attempts_text = _copy_text(rows, self.batch_id, self.engine, now)
        return Chunk(seeds, rows, now, items_text, attempts_text)

    def enter(self, seeds: Sequence[ItemSeed]) -> Entered:
        """Stage ``seeds``, insert those whose id is new, commit; the rest come back as
        clashes."""
        return self.enter_chunk(self.prepare(seeds))

    def enter_chunk(self, chunk: Chunk) -> Entered:
        """:meth:`enter` for a chunk :meth:`prepare` made ready."""
        seeds, rows, now = chunk.seeds, chunk.rows, chunk.now
        if not seeds:
            return Entered((), 0, ())
        if self.direct and chunk.copy_items is not None and self._copy_in(chunk):
            pending = tuple(r[0] for r in rows if r[7] == ItemState.PENDING.value)
            return Entered(pending, len(rows), ())
        params = {"batch": self.batch_id, "now": now, "engine": self.engine}
        with self.conn.begin():
            self._stage(rows)
            if self.pg:
                opened = self.conn.execute(self._both, params).all()
            else:
                self.conn.execute(self._items, params)
                opened = self.conn.execute(self._attempts, params).all()
            # Every row went in: no id was held already (the common case, no lookup).
            found = (
                self.conn.execute(self._clashes, params).all() if len(opened) < len(rows) else []
            )
            if not self.pg:
                self.conn.execute(text(f"DELETE FROM {_STAGE}"))
        by_line = {s.line_no: s for s in seeds}
        clashes = tuple(Clash(by_line[line], held, src) for line, _key, held, src in found)
        pending = tuple(i for i, state in opened if state == "RUNNING")
        return Entered(pending, len(opened), clashes)


@contextmanager
def bulk_intake(
    engine: Engine, batch_id: str, *, engine_name: str, model: str
) -> Iterator[BulkIntake]:
    with engine.connect() as conn:
        yield BulkIntake(conn, batch_id, engine=engine_name, model=model)


def set_intake(engine: Engine, batch_id: str, at: datetime | None) -> None:
    """Mark a batch as being entered (``at``) or entered in full (None)."""
    with engine.begin() as conn:
        values: dict[str, Any] = {"intake_at": at}
        if at is not None:
            values["done_at"] = None
        conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))


def tidy(engine: Engine) -> None:
    """After a large intake (PostgreSQL): VACUUM ANALYZE ``items``, so the planner knows its
    size and counts by (batch, state) are index-only scans (``status``) from the start."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) items"))


def holder_of(engine: Engine, out: str) -> Mapping[str, Any] | None:
    """The newest batch writing to ``out``, if any."""
    with engine.connect() as conn:
        row = conn.execute(
            select(batches)
            .where(batches.c.out == out)
            .order_by(batches.c.created_at.desc())
            .limit(1)
        ).first()
    return dict(row._mapping) if row else None


def batch_items(engine: Engine, batch_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(text("count(*)")).select_from(items).where(items.c.batch_id == batch_id)
            ).scalar()
            or 0
        )


@dataclass(frozen=True, slots=True)
class Collectable:
    """A batch ``gc`` looked at: collected (or would be, dry run) or refused."""

    batch_id: str
    finished: bool
    totals: Mapping[str, Any]


def collectable(engine: Engine, before: datetime) -> list[Collectable]:
    """Batches created before ``before`` whose rows are still there: finished ones (results
    written before ``before``, intake complete) with their totals, and unfinished ones."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(batches.c.id, batches.c.done_at, batches.c.intake_at)
            .where(batches.c.created_at < before, batches.c.totals.is_(None))
            .order_by(batches.c.created_at)
        ).all()
        found = []
        for batch_id, done_at, intake_at in rows:
            finished = done_at is not None and intake_at is None and _aware(done_at) < before
            found.append(
                Collectable(batch_id, finished, _totals(conn, batch_id) if finished else {})
            )
    return found


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _totals(conn: Connection, batch_id: str) -> dict[str, Any]:
    counts: dict[str, int] = {
        str(state): int(n)
        for state, n in conn.execute(
            select(items.c.state, func.count())
            .where(items.c.batch_id == batch_id)
            .group_by(items.c.state)
        )
    }
    audio_ms = conn.execute(
        select(func.coalesce(func.sum(items.c.audio_duration_ms), 0)).where(
            items.c.batch_id == batch_id
        )
    ).scalar()
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "audio_s": round(int(audio_ms or 0) / 1000, 3),
    }


def collect(engine: Engine, batch: Collectable) -> int:
    """Delete a finished batch's attempt and item rows, keeping its totals in the batch row;
    the number of item rows deleted. Guarded: a batch reopened meanwhile is left alone."""
    with engine.begin() as conn:
        kept = conn.execute(
            update(batches)
            .where(
                batches.c.id == batch.batch_id,
                batches.c.done_at.is_not(None),
                batches.c.intake_at.is_(None),
                batches.c.totals.is_(None),
            )
            .values(totals=dict(batch.totals))
        ).rowcount
        if kept != 1:
            return 0
        ids = select(items.c.id).where(items.c.batch_id == batch.batch_id).scalar_subquery()
        conn.execute(delete(attempts).where(attempts.c.item_id.in_(ids)))
        return int(conn.execute(delete(items).where(items.c.batch_id == batch.batch_id)).rowcount)


def stream_items(engine: Engine, batch_id: str, *, page: int = 2000) -> Iterator[Any]:
    """A batch's item rows in line order, read through a server-side cursor ``page`` rows at
    a time (PostgreSQL): a million-item batch is never held in memory."""
    from pipeline.ledger.repo import ItemRow

    query = select(items).where(items.c.batch_id == batch_id).order_by(items.c.line_no)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=page).execute(query)
        for row in result:
            yield ItemRow.from_row(row)
