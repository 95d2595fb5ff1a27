"""Items by batch and state, read from ``item_counts`` rather than counted.

Triggers on ``items`` (migration 0009) keep ``item_counts`` in the same transaction as every
insert, move and delete, so what this module reads is exact at any moment. On PostgreSQL the
table holds signed deltas, one row per statement and state touched: reading sums them, and
:func:`fold` replaces a batch's deltas by their sums so that reading stays a few rows (the
sweeper folds every sweep; a reader that finds many folds them too). Folding is one
statement that sums exactly the rows it deletes, so it never loses or doubles a move that
commits beside it. SQLite keeps one row per batch and state, so there is nothing to fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, text

from pipeline.ledger.tables import attempt_models, item_counts

# More delta rows than this for one batch and the reader folds them: a few hundred rows
# sum in well under a millisecond; the sweeper folds far more often than this fills.
FOLD_AT = 256

_FOLD = text(
    """
    WITH gone AS (
        DELETE FROM item_counts WHERE batch_id = :batch_id
        RETURNING state, n, audio_ms, last_at
    )
    INSERT INTO item_counts (batch_id, state, n, audio_ms, last_at)
    SELECT :batch_id, state, sum(n), sum(audio_ms), max(last_at)
    FROM gone GROUP BY state
    HAVING sum(n) <> 0 OR sum(audio_ms) <> 0
    """
)
_FOLD_MODELS = text(
    """
    WITH gone AS (
        DELETE FROM attempt_models WHERE batch_id = :batch_id RETURNING engine, model, n
    )
    INSERT INTO attempt_models (batch_id, engine, model, n)
    SELECT :batch_id, engine, model, sum(n) FROM gone GROUP BY engine, model
    HAVING sum(n) <> 0
    """
)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """A batch's items by state, their audio milliseconds by state, and when the latest
    one finished (a retried item's earlier finish may still count: it is an upper bound)."""

    counts: Mapping[str, int] = field(default_factory=dict)
    audio_ms: Mapping[str, int] = field(default_factory=dict)
    last_finished: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def batch_counts(engine: Engine, batch_id: str) -> BatchCounts:
    """One batch's counts: a handful of rows read through the (batch_id, state) index."""
    query = (
        select(
            item_counts.c.state,
            func.sum(item_counts.c.n),
            func.sum(item_counts.c.audio_ms),
            func.max(item_counts.c.last_at),
            func.count(),
        )
        .where(item_counts.c.batch_id == batch_id)
        .group_by(item_counts.c.state)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if sum(int(r[4]) for r in rows) > FOLD_AT:
        fold(engine, batch_id)
    lasts = [_aware(r[3]) for r in rows if r[3] is not None and r[1]]
    return BatchCounts(
        counts={r[0]: int(r[1]) for r in rows if r[1]},
        audio_ms={r[0]: int(r[2] or 0) for r in rows if r[1]},
        last_finished=max(lasts) if lasts else None,  # type: ignore[type-var]
    )


def counts_by_batch(engine: Engine) -> dict[str, BatchCounts]:
    """Every batch's counts (the console's batch list), from item_counts alone."""
    query = select(
        item_counts.c.batch_id,
        item_counts.c.state,
        func.sum(item_counts.c.n),
        func.sum(item_counts.c.audio_ms),
        func.max(item_counts.c.last_at),
    ).group_by(item_counts.c.batch_id, item_counts.c.state)
    per: dict[str, tuple[dict[str, int], dict[str, int], list[datetime]]] = {}
    with engine.connect() as conn:
        for batch_id, state, n, ms, last in conn.execute(query):
            if not n:
                continue
            counts, audio, lasts = per.setdefault(batch_id, ({}, {}, []))
            counts[state], audio[state] = int(n), int(ms or 0)
            if last is not None:
                lasts.append(_aware(last))  # type: ignore[arg-type]
    return {b: BatchCounts(c, a, max(lasts) if lasts else None) for b, (c, a, lasts) in per.items()}


def state_totals(engine: Engine) -> dict[str, int]:
    """Items by state in the whole ledger (the metrics' gauges), from item_counts alone:
    the deltas summed, states that sum to nothing left out, as every reader here does.
    It reads a few rows per batch and state however many items there are; it does not
    fold (a metrics read should not write): the sweeper folds just before it reads."""
    query = select(item_counts.c.state, func.sum(item_counts.c.n)).group_by(item_counts.c.state)
    with engine.connect() as conn:
        return {str(state): int(n) for state, n in conn.execute(query) if n}


def models_in_use(engine: Engine, batch_id: str) -> list[tuple[str, str, int]]:
    """(engine, model, items) of the items' newest attempts, most items first: what the
    batch is being transcribed with now, reprocessing included (from attempt_models)."""
    n = func.sum(attempt_models.c.n)
    query = (
        select(attempt_models.c.engine, attempt_models.c.model, n)
        .where(attempt_models.c.batch_id == batch_id)
        .group_by(attempt_models.c.engine, attempt_models.c.model)
        .having(n != 0)
        .order_by(n.desc(), attempt_models.c.model)
    )
    with engine.connect() as conn:
        return [(str(e), str(m), int(k)) for e, m, k in conn.execute(query)]


def fold(engine: Engine, batch_id: str) -> None:
    """Replace a batch's deltas by one row per state (and per model): PostgreSQL only,
    SQLite has no deltas."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        conn.execute(_FOLD, {"batch_id": batch_id})
        conn.execute(_FOLD_MODELS, {"batch_id": batch_id})


def fold_all(engine: Engine, *, at_least: int = 32) -> int:
    """Fold every batch with at least ``at_least`` delta rows; how many were folded. The
    sweeper calls this each sweep, so the table stays a few rows per batch and state."""
    if engine.dialect.name != "postgresql":
        return 0
    crowded: set[str] = set()
    with engine.connect() as conn:
        for table in (item_counts, attempt_models):
            query = (
                select(table.c.batch_id).group_by(table.c.batch_id).having(func.count() >= at_least)
            )
            crowded.update(conn.execute(query).scalars())
    for batch_id in crowded:
        fold(engine, batch_id)
    return len(crowded)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
