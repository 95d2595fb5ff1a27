"""Status read straight from PostgreSQL with psycopg: the ``status BATCH`` command's path.

``status`` is the operator's quick look, and most of its time used to go to importing
SQLAlchemy (about 0.3 s of a 0.6-0.8 s command) for five small queries. These are the
same queries :class:`pipeline.outputs.report.LedgerReads` makes, written for PostgreSQL: counts and
models come from the tables the triggers of migration 0009 keep, so each is a few rows.
A ledger not yet migrated that far (no ``item_counts``) is left to the SQLAlchemy path,
which migrates it first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline.outputs.report import FailedItem


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://"))


class PgReads:
    """:class:`pipeline.outputs.report.StatusReads` over one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def ready(self) -> bool:
        """Whether the ledger has the kept counts (migration 0009) to read from."""
        row = self._conn.execute(
            "SELECT to_regclass('item_counts') IS NOT NULL"
            " AND to_regclass('attempt_models') IS NOT NULL"
        ).fetchone()
        return bool(row and row[0])

    def batch(self, batch_id: str) -> Mapping[str, Any] | None:
        with self._conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM batches WHERE id = %s", (batch_id,)).fetchone()

    def counts(self, batch_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT state, sum(n) FROM item_counts WHERE batch_id = %s"
            " GROUP BY state HAVING sum(n) <> 0",
            (batch_id,),
        )
        return {str(state): int(n) for state, n in rows}

    def models(self, batch_id: str) -> list[tuple[str, str, int]]:
        rows = self._conn.execute(
            "SELECT engine, model, sum(n) AS k FROM attempt_models WHERE batch_id = %s"
            " GROUP BY engine, model HAVING sum(n) <> 0 ORDER BY k DESC, model",
            (batch_id,),
        )
        return [(str(e), str(m), int(k)) for e, m, k in rows]

    def timings(self, batch_id: str, limit: int | None) -> list[Mapping[str, float]]:
        rows = self._conn.execute(
            "SELECT timings FROM items WHERE batch_id = %s AND timings IS NOT NULL"
            " ORDER BY line_no LIMIT %s",
            (batch_id, limit),
        )
        return [dict(t or {}) for (t,) in rows]

    def failures(self, batch_id: str, limit: int) -> list[FailedItem]:
        rows = self._conn.execute(
            "SELECT key, spec->>'id', line_no, state, error_code, error_message FROM items"
            " WHERE batch_id = %s AND state IN ('FAILED', 'DEAD')"
            " ORDER BY batch_id, line_no LIMIT %s",
            (batch_id, limit),
        )
        return [FailedItem(*row) for row in rows]


@contextmanager
def pg_reads(url: str) -> Iterator[PgReads]:
    """A read-only connection for one status report (autocommit: no transaction held)."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield PgReads(conn)
