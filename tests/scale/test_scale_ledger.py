"""The ledger at scale: item_counts stays exact under concurrent moves, and the sweep's
queries read the partial indexes of the rows in flight, not the table."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select, text

from pipeline.ledger import ItemSeed, Ledger, open_ledger, sqlite_url, utcnow
from pipeline.ledger.counts import batch_counts, fold, fold_all, models_in_use
from pipeline.ledger.sweep import release_expired
from pipeline.ledger.tables import items
from pipeline.states import ItemState as S

BATCH = "b-counts"
MODELS = ("tiny.en", "base.en", "small.en")

# A walk through the states a worker drives an item along, plus the ways back.
NEXT: dict[S, list[S]] = {
    S.PENDING: [S.PREPARING],
    S.PREPARING: [S.PREPARED, S.PENDING, S.FAILED],
    S.PREPARED: [S.SUBMITTING, S.TRANSCRIBING],
    S.TRANSCRIBING: [S.SUCCEEDED, S.PREPARED],
    S.SUBMITTING: [S.SUBMITTED, S.PREPARED],
    S.SUBMITTED: [S.PERSISTING],
    S.PERSISTING: [S.SUCCEEDED, S.DEAD, S.SUBMITTED],
}  # a finished item (SUCCEEDED, FAILED, DEAD) goes on only by a new attempt


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A migrated ledger with one batch, on SQLite or in a scratch PostgreSQL database."""
    if request.param == "sqlite":
        led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
        yield led
        led.engine.dispose()
        return
    url = request.getfixturevalue("pg_url")
    led = open_ledger(url)
    yield led
    led.engine.dispose()


def seed_items(ledger: Ledger, n: int) -> list[str]:
    ledger.ensure_batch(BATCH, kind="submit", out="/tmp/out", engine="local", model="tiny.en")
    seeds = [
        ItemSeed(f"k{i}", i, f"/in/{i}.wav", {"id": f"k{i}", "source": f"/in/{i}.wav"}, "f", None)
        for i in range(1, n + 1)
    ]
    ledger.sync_items(BATCH, seeds, engine="local", model="tiny.en")
    return [r.id for r in ledger.list_items(BATCH, limit=n)]


def counted(ledger: Ledger) -> tuple[dict[str, int], dict[str, int]]:
    """Counts and audio by state, counted the slow way from the items themselves."""
    rows: dict[str, int] = {}
    audio: dict[str, int] = {}
    with ledger.engine.connect() as conn:
        for state, ms in conn.execute(
            select(items.c.state, items.c.audio_duration_ms).where(items.c.batch_id == BATCH)
        ):
            rows[state] = rows.get(state, 0) + 1
            audio[state] = audio.get(state, 0) + (ms or 0)
    return rows, audio


def test_counts_stay_exact_under_concurrent_moves(ledger: Ledger) -> None:
    """Eight threads move 300 items by compare-and-set (many moves lose the race), set
    audio lengths, reprocess finished items with other models, release expired claims and
    fold the deltas meanwhile: item_counts ends equal to counting the rows, item by item and
    audio second by audio second, and attempt_models to joining items with attempts."""
    ids = seed_items(ledger, 300)
    assert batch_counts(ledger.engine, BATCH).counts == {"PENDING": 300}
    stop = threading.Event()
    errors: list[BaseException] = []

    def mover(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(250):
                item_id = rnd.choice(ids)
                row = ledger.get(item_id)
                assert row is not None
                if row.state.terminal:  # reprocessed: a new attempt, unless raced
                    model = rnd.choice(MODELS)
                    ledger.restart(item_id, expected=row.state, engine="local", model=model)
                    continue
                to = rnd.choice(NEXT[row.state])
                if to.claimed:
                    ledger.claim(item_id, row.state, to, owner=f"w{seed}", lease_s=-1)
                elif to is S.PREPARED and rnd.random() < 0.5:
                    ledger.move(item_id, row.state, to, audio_duration_ms=rnd.randint(1, 9000))
                else:
                    ledger.move(item_id, row.state, to)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    def sweeper() -> None:
        try:
            while not stop.is_set():
                release_expired(ledger.engine)  # the claims above expire at once
                fold_all(ledger.engine, at_least=1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(k,)) for k in range(8)]
    sweeping = threading.Thread(target=sweeper)
    sweeping.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sweeping.join()
    assert errors == []
    rows, audio = counted(ledger)
    kept = batch_counts(ledger.engine, BATCH)
    assert len(rows) > 3  # the walk spread the items over several states
    assert dict(kept.counts) == rows
    assert {s: ms for s, ms in kept.audio_ms.items()} == {s: audio[s] for s in rows}
    joined = set(ledger.models_in_use(BATCH))
    assert len(joined) > 1 and set(models_in_use(ledger.engine, BATCH)) == joined
    fold(ledger.engine, BATCH)
    assert dict(batch_counts(ledger.engine, BATCH).counts) == rows
    assert set(models_in_use(ledger.engine, BATCH)) == joined


def test_counts_follow_bulk_statements_and_deletes(ledger: Ledger) -> None:
    """A multi-row UPDATE and a DELETE of items and their attempts keep item_counts and
    attempt_models exact (the triggers see whole statements, not only the ledger's moves)."""
    seed_items(ledger, 50)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE items SET state = 'FAILED' WHERE line_no <= 20"))
        conn.execute(text("UPDATE items SET audio_duration_ms = 1000 WHERE line_no > 40"))
        conn.execute(
            text("DELETE FROM attempts WHERE item_id IN (SELECT id FROM items WHERE line_no > 45)")
        )
        conn.execute(text("DELETE FROM items WHERE line_no > 45"))
    kept = batch_counts(ledger.engine, BATCH)
    assert dict(kept.counts) == {"FAILED": 20, "PENDING": 25} == counted(ledger)[0]
    assert models_in_use(ledger.engine, BATCH) == [("local", "tiny.en", 45)]
    assert kept.audio_ms["PENDING"] == 5000
    assert kept.last_finished is None


# ANALYZE reads a random sample (30,000 rows at the default target), so the estimated count
# of the 1 % of rows in flight varies from run to run, and with it which of two indexes on
# those rows the planner picks: the plans checked below are made on statistics from every row.
EXACT_STATISTICS = "SET default_statistics_target = 1000"


@pytest.mark.postgres
def test_sweep_reads_use_the_partial_indexes(pg_url: str) -> None:
    """On 200,000 finished rows and 2,000 in flight, EXPLAIN of the sweep's due-row query
    and of its lease release shows the partial indexes ix_items_due and ix_items_leased,
    and each reads only rows in flight."""
    ledger = open_ledger(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in (FINISHED, IN_FLIGHT, EXACT_STATISTICS, "ANALYZE items"):
            conn.execute(statement)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE")):
            captured.append((statement, params))

    event.listen(ledger.engine, "before_cursor_execute", capture)
    assert len(ledger.due_rows(utcnow())) == 200  # 1 in 10 of the waiting ones is due
    due_sql = captured[-1]
    assert len(release_expired(ledger.engine)) == 0  # every lease is still running
    release_sql = captured[-1]
    event.remove(ledger.engine, "before_cursor_execute", capture)
    with ledger.engine.connect() as conn:
        plans = [
            "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {stmt}", params))
            for stmt, params in (due_sql, release_sql)
        ]
    assert "ix_items_due" in plans[0], plans[0]
    assert "ix_items_leased" in plans[1], plans[1]
    assert "Seq Scan on items" not in "".join(plans), plans
    assert "SKIP LOCKED" in release_sql[0].upper()
    ledger.engine.dispose()


@pytest.mark.postgres
def test_dead_notes_and_metrics_read_only_what_is_due(pg_url: str) -> None:
    """On 200,000 finished rows of which 10,000 DEAD were announced already and 30 DEAD were
    not: EXPLAIN of the sweep's DEAD read shows ix_items_dead_unnoted and no scan of items,
    and its look-up of those 30 in notify_dead_noted goes by key; the sweep announces the
    30, once. The metrics' totals (item_counts, deltas and all) equal counting the items."""
    from pipeline.ledger.counts import state_totals
    from pipeline.notify.outbox import note_dead
    from pipeline.settings import NotifySettings

    ledger = open_ledger(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in (
            FINISHED,
            IN_FLIGHT,
            *DEAD_ANNOUNCED,
            DEAD_NEW,
            EXACT_STATISTICS,
            "ANALYZE",
        ):
            conn.execute(statement)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "dead_noted" in statement:
            captured.append((statement, params))

    event.listen(ledger.engine, "before_cursor_execute", capture)
    assert note_dead(ledger.engine, NotifySettings()) == 30
    event.remove(ledger.engine, "before_cursor_execute", capture)
    with ledger.engine.connect() as conn:
        read, lookup = (
            "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
            for sql, params in captured[:2]
        )
    assert "ix_items_dead_unnoted" in read, read
    assert "Seq Scan on items" not in read, read
    assert "pk_notify_dead_noted" in lookup and "Seq Scan" not in lookup, lookup
    assert note_dead(ledger.engine, NotifySettings()) == 0
    with ledger.engine.connect() as conn:
        unnoted = conn.execute(
            text("SELECT count(*) FROM items WHERE dead_noted IS NULL AND state = 'DEAD'")
        )
        assert unnoted.scalar_one() == 0
    totals = state_totals(ledger.engine)
    assert totals == ledger.counts(None)
    assert totals["DEAD"] == 10_030 and sum(totals.values()) == 202_000
    ledger.engine.dispose()


FINISHED = """
INSERT INTO batches (id, kind, out, engine, model, options, created_at, done_at)
VALUES ('old', 'submit', '/tmp/old', 'local', 'tiny.en', '{}', now(), now()),
       ('live', 'submit', '/tmp/live', 'local', 'tiny.en', '{}', now(), NULL);
INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state, attempt,
                   tries, polls, created_at, updated_at, finished_at)
SELECT md5('old' || g), 'old', 'rec-' || g, g, '/data/rec-' || g || '.wav', '{}', 'f',
       CASE WHEN mod(g, 50) = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END, 1, 0, 0, now(), now(), now()
FROM generate_series(1, 200000) g
"""
IN_FLIGHT = """
INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state, attempt,
                   tries, polls, created_at, updated_at, next_run_at, lease_owner, lease_until)
SELECT md5('live' || g), 'live', 'live-' || g, g, '/data/live-' || g || '.wav', '{}', 'f',
       (ARRAY['PENDING', 'PREPARING', 'PREPARED', 'SUBMITTED'])[1 + mod(g, 4)], 1, 0, 0, now(),
       now(),
       CASE WHEN mod(g, 4) = 1 THEN NULL
            WHEN mod(g, 10) = 0 THEN now() - interval '1 minute'
            ELSE now() + interval '1 hour' END,
       CASE WHEN mod(g, 4) = 1 THEN 'w1' END,
       CASE WHEN mod(g, 4) = 1 THEN now() + interval '10 minutes' END
FROM generate_series(1, 2000) g
"""
# 1 in 20 finished rows died and were announced (the way the sweep or a worker notes them).
DEAD_ANNOUNCED = (
    "UPDATE items SET state = 'DEAD' WHERE batch_id = 'old' AND mod(line_no, 20) = 1",
    """INSERT INTO notify_dead_noted (item_id, attempt, noted_at)
    SELECT id, attempt, now() FROM items WHERE state = 'DEAD'""",
    "UPDATE items SET dead_noted = attempt WHERE state = 'DEAD'",
)
# 30 more died in a process without the hook that announces them.
DEAD_NEW = "UPDATE items SET state = 'DEAD' WHERE batch_id = 'old' AND line_no IN " + str(
    tuple(range(5, 5 + 30 * 1000, 1000))
)
