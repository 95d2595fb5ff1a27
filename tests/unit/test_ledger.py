"""Unit tests for pipeline.ledger and pipeline.outputs.report: compare-and-set on SQLite and
PostgreSQL.

Each test gets an empty ledger: a SQLite file in tmp_path, or a fresh PostgreSQL schema
(``postgresql://postgres@127.0.0.1:5432/test``) that is dropped afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, select
from support import walk

from pipeline.errors import FailureCode, TransitionRefused
from pipeline.ledger import Failure, ItemSeed, Ledger, open_ledger, sqlite_url, utcnow
from pipeline.ledger.repo import Move, add_timing
from pipeline.ledger.tables import attempts
from pipeline.outputs.report import batch_status
from pipeline.states import TERMINAL, ItemState, can_start_attempt

S = ItemState
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = "run-test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """An empty, migrated ledger with one batch, on SQLite or in a throwaway PostgreSQL schema."""
    if request.param == "sqlite":
        led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
        led.ensure_batch(BATCH, kind="run", out=str(tmp_path), engine="local", model="tiny.en")
        yield led
        led.engine.dispose()
        return
    import psycopg

    schema = f"bs_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        led = open_ledger(f"{PG_URL}?options=-csearch_path%3D{schema}")
        led.ensure_batch(BATCH, kind="run", out=str(tmp_path), engine="local", model="tiny.en")
        yield led
        led.engine.dispose()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def seed(
    key: str,
    fingerprint: str = "f1",
    *,
    stamp: str | None = "10:1",
    failure: tuple[str, str] | None = None,
    line: int = 1,
) -> ItemSeed:
    return ItemSeed(
        key,
        line,
        f"/in/{key}.wav",
        {"source": f"/in/{key}.wav", "id": key},
        fingerprint,
        stamp,
        failure,
    )


def add(ledger: Ledger, *keys: str) -> list[str]:
    ledger.sync_items(
        BATCH, [seed(k, line=i) for i, k in enumerate(keys, 1)], engine="local", model="tiny.en"
    )
    by_key = {r.key: r.id for r in ledger.list_items(BATCH)}
    return [by_key[k] for k in keys]


def attempt_rows(ledger: Ledger, item_id: str) -> list[tuple[int, str]]:
    return [(a["number"], a["state"]) for a in ledger.attempts_of(item_id)]


def test_claim_twice_second_gets_none(ledger: Ledger) -> None:
    """The first claim takes the item with a lease; a second claim of the same state gets None."""
    (item,) = add(ledger, "a")
    first = ledger.claim(item, S.PENDING, S.PREPARING, owner="w1", lease_s=60)
    assert first is not None
    assert (first.state, first.lease_owner) == (S.PREPARING, "w1")
    assert first.lease_until is not None and first.lease_until > utcnow()
    assert ledger.claim(item, S.PENDING, S.PREPARING, owner="w2", lease_s=60) is None
    assert ledger.get(item).lease_owner == "w1"  # type: ignore[union-attr]


def test_racing_claims_have_one_winner(ledger: Ledger) -> None:
    """Eight threads claiming the same item at once: exactly one succeeds."""
    (item,) = add(ledger, "a")
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def worker(n: int) -> None:
        barrier.wait()
        if ledger.claim(item, S.PENDING, S.PREPARING, owner=f"w{n}", lease_s=60):
            wins.append(f"w{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert ledger.get(item).lease_owner == wins[0]  # type: ignore[union-attr]


def test_move_with_wrong_expected_state_or_owner_is_false(ledger: Ledger) -> None:
    """move() from the wrong state, or as the wrong lease owner, changes nothing and says False."""
    (item,) = add(ledger, "a")
    assert ledger.move(item, S.PREPARED, S.TRANSCRIBING) is False
    assert ledger.get(item).state is S.PENDING  # type: ignore[union-attr]
    ledger.claim(item, S.PENDING, S.PREPARING, owner="w1", lease_s=60)
    assert ledger.move(item, S.PREPARING, S.PREPARED, owner="w2") is False
    assert ledger.get(item).state is S.PREPARING  # type: ignore[union-attr]


def test_move_out_of_a_claim_drops_the_lease_and_terminal_sets_finished(ledger: Ledger) -> None:
    """Leaving a claim clears owner and lease; reaching a terminal state stamps finished_at."""
    (item,) = add(ledger, "a")
    ledger.claim(item, S.PENDING, S.PREPARING, owner="w1", lease_s=60)
    assert ledger.move(item, S.PREPARING, S.PREPARED, owner="w1", media_key="/s/a.wav")
    row = ledger.get(item)
    assert (row.state, row.lease_owner, row.lease_until, row.media_key) == (  # type: ignore[union-attr]
        S.PREPARED,
        None,
        None,
        "/s/a.wav",
    )
    ledger.claim(item, S.PREPARED, S.TRANSCRIBING, owner="w1", lease_s=60)
    assert ledger.move(item, S.TRANSCRIBING, S.SUCCEEDED, owner="w1", outputs={"json": "a.json"})
    row = ledger.get(item)
    assert row.state is S.SUCCEEDED and row.finished_at is not None  # type: ignore[union-attr]
    assert row.outputs == {"json": "a.json"}  # type: ignore[union-attr]


def test_move_writes_attempt_facts_only_when_the_move_happens(ledger: Ledger) -> None:
    """move(attempt=...) records the task id on the current attempt in the same transaction;
    a move that loses its compare-and-set leaves the attempt untouched."""
    a, b = add(ledger, "a", "b")
    walk(ledger, a, S.PREPARED)
    ledger.claim(a, S.PREPARED, S.SUBMITTING, owner="w1", lease_s=60)
    assert ledger.move(
        a,
        S.SUBMITTING,
        S.SUBMITTED,
        owner="w1",
        provider_task_id="t-1",
        attempt={"provider_task_id": "t-1", "provider_request_id": "r-1"},
    )
    (att,) = ledger.attempts_of(a)
    assert (att["provider_task_id"], att["provider_request_id"]) == ("t-1", "r-1")
    assert not ledger.move(
        b, S.SUBMITTING, S.SUBMITTED, provider_task_id="t-2", attempt={"provider_task_id": "t-2"}
    )
    (att,) = ledger.attempts_of(b)
    assert att["provider_task_id"] is None
    assert ledger.known_task_ids(["t-1", "t-2"]) == {"t-1"}


def test_get_many_keeps_order_and_skips_unknown_ids(ledger: Ledger) -> None:
    a, _, c = add(ledger, "a", "b", "c")
    assert [r.key for r in ledger.get_many([c, "nope", a, c])] == ["c", "a"]
    assert ledger.get_many([]) == []


def test_mark_due_only_touches_rows_still_in_the_state_read(ledger: Ledger) -> None:
    """mark_due is a compare-and-set per row: an item that moved on keeps its schedule."""
    a, b = add(ledger, "a", "b")
    rows = ledger.get_many([a, b])
    walk(ledger, b, S.PREPARED)
    at = utcnow() + timedelta(minutes=5)
    assert ledger.mark_due(rows, at) == 1
    marks = {r.key: r.next_run_at for r in ledger.get_many([a, b])}
    assert marks["b"] is None and abs((marks["a"] - at).total_seconds()) < 1  # type: ignore[operator]


def test_release_expired_returns_claims_to_their_from_state(ledger: Ledger) -> None:
    """Expired claims fall back (PREPARING->PENDING, TRANSCRIBING->PREPARED); live ones stay."""
    a, b, c = add(ledger, "a", "b", "c")
    ledger.claim(a, S.PENDING, S.PREPARING, owner="dead", lease_s=-1)
    walk(ledger, b, S.PREPARED)
    ledger.claim(b, S.PREPARED, S.TRANSCRIBING, owner="dead", lease_s=-1)
    ledger.claim(c, S.PENDING, S.PREPARING, owner="alive", lease_s=3600)
    released = ledger.release_expired()
    assert sorted(released) == sorted([(a, S.PREPARING), (b, S.TRANSCRIBING)])
    states = {r.key: (r.state, r.lease_owner) for r in ledger.list_items(BATCH)}
    assert states == {"a": (S.PENDING, None), "b": (S.PREPARED, None), "c": (S.PREPARING, "alive")}
    later = ledger.release_expired(now=utcnow() + timedelta(hours=2))
    assert later == [(c, S.PREPARING)]
    assert ledger.release_expired() == []


def test_fail_records_the_error_on_item_and_attempt(ledger: Ledger) -> None:
    """fail() moves to FAILED with code and message, and ends the current attempt the same way."""
    (item,) = add(ledger, "a")
    ledger.claim(item, S.PENDING, S.PREPARING, owner="w1", lease_s=60)
    assert ledger.fail(
        item, S.PREPARING, Failure.permanent("corrupt", "/in/a.wav cannot be decoded"), owner="w1"
    )
    row = ledger.get(item)
    assert (row.state, row.error_code, row.error_message) == (  # type: ignore[union-attr]
        S.FAILED,
        "corrupt",
        "/in/a.wav cannot be decoded",
    )
    (att,) = ledger.attempts_of(item)
    assert (att["state"], att["error_code"], att["finished_at"] is not None) == (
        "FAILED",
        "corrupt",
        True,
    )
    assert ledger.fail(item, S.PREPARING, Failure.permanent("corrupt", "again")) is False


def test_fail_keeps_whether_the_failure_is_retryable(ledger: Ledger) -> None:
    """The retryable flag is stored beside the code, on the item and its attempt, and read
    back as the row's failure; a new attempt clears it."""
    a, b = add(ledger, "a", "b")
    lost = Failure(FailureCode.TASK_LOST.value, "task t-1 is unknown", True, {"task": "t-1"})
    assert ledger.fail(a, S.PENDING, lost, dead=True)
    assert ledger.fail(b, S.PENDING, Failure.permanent(FailureCode.NOT_MEDIA, "not audio"))
    rows = {r.key: r for r in ledger.list_items(BATCH)}
    assert rows["a"].failure == lost and rows["a"].state is S.DEAD
    assert rows["b"].failure is not None and rows["b"].failure.retryable is False
    (att,) = ledger.attempts_of(a)
    assert (att["error_code"], att["error_retryable"]) == ("task_lost", True)
    assert ledger.restart(a)
    assert ledger.get(a).failure is None  # type: ignore[union-attr]


def test_a_move_the_state_table_forbids_is_refused_before_any_sql(ledger: Ledger) -> None:
    """PENDING -> SUCCEEDED is not in states.ALLOWED: move() raises illegal_transition, and
    the row is untouched (whatever state it is really in)."""
    (item,) = add(ledger, "a")
    with pytest.raises(TransitionRefused) as info:
        ledger.move(item, S.PENDING, S.SUCCEEDED)
    assert info.value.code is FailureCode.ILLEGAL_TRANSITION
    with pytest.raises(TransitionRefused):
        ledger.claim(item, S.PENDING, S.SUBMITTING, owner="w1", lease_s=60)
    with pytest.raises(TransitionRefused):
        ledger.move(item, S.SUCCEEDED, S.FAILED)  # a finished item moves only by a new attempt
    assert ledger.get(item).state is S.PENDING  # type: ignore[union-attr]


def test_an_unknown_column_is_refused(ledger: Ledger) -> None:
    """A misspelt column fails loudly (mypy catches it first: the columns are a TypedDict)."""
    (item,) = add(ledger, "a")
    with pytest.raises(TypeError, match="media_uri"):
        ledger.update_if(item, S.PENDING, media_uri="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="error_code"):
        ledger.move(item, S.PENDING, S.FAILED, error_code="x")  # type: ignore[call-arg]


def test_sync_items_creates_then_leaves_unchanged_items_alone(ledger: Ledger) -> None:
    """New keys are created PENDING at attempt 1; the same seeds again change nothing."""
    rep = ledger.sync_items(BATCH, [seed("a"), seed("b", line=2)], engine="local", model="tiny.en")
    assert (rep.created, rep.reset, rep.unchanged) == (2, 0, 0)
    rows = ledger.list_items(BATCH)
    assert [(r.key, r.state, r.attempt, r.line_no) for r in rows] == [
        ("a", S.PENDING, 1, 1),
        ("b", S.PENDING, 1, 2),
    ]
    assert attempt_rows(ledger, rows[0].id) == [(1, "RUNNING")]
    rep = ledger.sync_items(BATCH, [seed("a"), seed("b", line=2)], engine="local", model="tiny.en")
    assert (rep.created, rep.reset, rep.unchanged) == (0, 0, 2)


@pytest.mark.parametrize("change", ["fingerprint", "stamp", "force"])
def test_sync_items_resets_on_change_or_force(ledger: Ledger, change: str) -> None:
    """A new fingerprint, a changed file stamp, or force starts attempt 2 from PENDING."""
    (item,) = add(ledger, "a")
    ledger.fail(item, S.PENDING, Failure.permanent("corrupt", "bad"))
    new = {"fingerprint": seed("a", "f2"), "stamp": seed("a", stamp="11:2"), "force": seed("a")}[
        change
    ]
    rep = ledger.sync_items(BATCH, [new], engine="local", model="base", force=change == "force")
    assert (rep.created, rep.reset, rep.unchanged) == (0, 1, 0)
    row = ledger.get(item)
    assert (row.state, row.attempt, row.error_code, row.finished_at) == (  # type: ignore[union-attr]
        S.PENDING,
        2,
        None,
        None,
    )
    assert attempt_rows(ledger, item) == [(1, "FAILED"), (2, "RUNNING")]
    with ledger.engine.connect() as conn:
        models = (
            conn.execute(
                select(attempts.c.model)
                .where(attempts.c.item_id == item)
                .order_by(attempts.c.number)
            )
            .scalars()
            .all()
        )
    assert models == ["tiny.en", "base"]


def test_sync_items_seeds_a_bad_line_as_failed(ledger: Ledger) -> None:
    """A seed carrying a failure is created FAILED with its code and message, attempt closed."""
    ledger.sync_items(
        BATCH,
        [seed("@line3", failure=("manifest_invalid", "line 3: bad"))],
        engine="local",
        model="tiny.en",
    )
    (row,) = ledger.list_items(BATCH)
    assert (row.state, row.error_code, row.error_message) == (
        S.FAILED,
        "manifest_invalid",
        "line 3: bad",
    )
    assert row.finished_at is not None
    assert attempt_rows(ledger, row.id) == [(1, "FAILED")]


def test_counts_and_state_filter(ledger: Ledger) -> None:
    """counts() groups by state; list_items(states=...) returns only those, in line order."""
    _, b, c = add(ledger, "a", "b", "c")
    ledger.fail(b, S.PENDING, Failure.permanent("not_found", "gone"))
    ledger.move(c, S.PENDING, S.DEAD)
    assert ledger.counts(BATCH) == {"PENDING": 1, "FAILED": 1, "DEAD": 1}
    assert [r.key for r in ledger.list_items(BATCH, states=[S.FAILED, S.DEAD])] == ["b", "c"]


def test_batch_status_report(ledger: Ledger) -> None:
    """batch_status gives counts, done, per-stage timing summaries and failures with their ids."""
    a, b = add(ledger, "a", "b")
    ledger.sync_items(
        BATCH,
        [
            seed("a"),
            seed("b", line=2),
            seed("@line3", failure=("manifest_invalid", "line 3: bad"), line=3),
        ],
        engine="local",
        model="tiny.en",
    )
    for item, seconds in ((a, 1.0), (b, 3.0)):
        row = ledger.get(item)
        assert row is not None
        ledger.update_if(item, row.state, timings=add_timing(row.timings, "prepare", seconds))
    row = ledger.get(a)
    assert row is not None  # timings add up within an attempt: a took 1.5 s
    ledger.update_if(a, row.state, timings=add_timing(row.timings, "prepare", 0.5))
    report = batch_status(ledger, BATCH)
    assert report is not None
    assert (report["total"], report["counts"], report["done"]) == (
        3,
        {"PENDING": 2, "FAILED": 1},
        False,
    )
    assert (report["engine"], report["model"]) == ("local", "tiny.en")
    assert report["stage_timings"] == {
        "prepare": {"count": 2, "mean_s": 2.25, "p50_s": 2.25, "p95_s": 3.0, "total_s": 4.5}
    }
    assert report["failures"] == [
        {
            "id": "@line3",
            "line": 3,
            "state": "FAILED",
            "code": "manifest_invalid",
            "message": "line 3: bad",
        }
    ]
    walk(ledger, a, S.SUCCEEDED)
    ledger.fail(b, S.PENDING, Failure.permanent("corrupt", "/in/b.wav is damaged"))
    report = batch_status(ledger, BATCH)
    assert report is not None and report["done"] is True
    assert [f["id"] for f in report["failures"]] == ["b", "@line3"]
    assert batch_status(ledger, "no-such-batch") is None


def test_migrations_build_the_schema_the_code_declares(ledger: Ledger) -> None:
    """Alembic's head and ``pipeline.ledger.tables`` agree: every column and index the
    queries rely on (by provider task, by media key, by source) exists after migrating."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from pipeline.ledger.tables import metadata

    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        names = {ix["name"] for ix in inspect(conn).get_indexes("items")}
    assert diff == []
    assert {"ix_items_provider_task_id", "ix_items_media_key", "ix_items_source"} <= names


def test_migration_0010_backfills_retryable_from_the_code(tmp_path: Path) -> None:
    """Failures recorded before 0010 get the flag their code implies: a lost task or a
    download_failed is retried by the next run, a crash (internal) or bad audio is not."""
    from alembic import command
    from sqlalchemy import text

    from pipeline.ledger import alembic_config, make_engine, migrate

    engine = make_engine(sqlite_url(tmp_path / "old.db"))
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.execute(
            text(
                "INSERT INTO batches (id, kind, out, engine, model, options, created_at)"
                " VALUES ('b', 'run', '/o', 'local', 'tiny.en', '{}', '2026-01-01')"
            )
        )
        for n, code in enumerate(["task_lost", "download_failed", "internal", "not_media", None]):
            conn.execute(
                text(
                    "INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint,"
                    " state, attempt, tries, polls, error_code, created_at, updated_at)"
                    " VALUES (:id, 'b', :id, :n, '/a', '{}', 'f', 'FAILED', 1, 0, 0, :code,"
                    " '2026-01-01', '2026-01-01')"
                ),
                {"id": f"i{n}", "n": n, "code": code},
            )
    migrate(engine)
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT error_code, error_retryable FROM items")).all())
    engine.dispose()
    assert got == {
        "task_lost": True,
        "download_failed": True,
        "internal": False,
        "not_media": False,
        None: None,
    }


def test_batch_close_is_one_writer_after_the_last_item(ledger: Ledger) -> None:
    """claim_batch_close lets one owner through, only once every item is finished; a lapsed
    claim can be taken over; an item restarted mid-write keeps the batch open."""
    a, b = add(ledger, "a", "b")
    assert not ledger.claim_batch_close(BATCH, owner="w1", lease_s=60)  # items unfinished
    walk(ledger, a, S.SUCCEEDED)
    ledger.fail(b, S.PENDING, Failure.permanent("corrupt", "bad"), dead=True)
    assert ledger.claim_batch_close(BATCH, owner="w1", lease_s=60)
    assert not ledger.claim_batch_close(BATCH, owner="w2", lease_s=60)  # held
    assert ledger.restart(b)  # an operator replays the item while w1 writes
    assert not ledger.end_batch_close(BATCH, owner="w1", written=True)
    assert (ledger.batch(BATCH) or {})["done_at"] is None
    ledger.fail(b, S.PENDING, Failure.permanent("corrupt", "bad"), dead=True)
    assert ledger.claim_batch_close(BATCH, owner="w2", lease_s=-1)  # already lapsed
    assert ledger.claim_batch_close(BATCH, owner="w3", lease_s=60)  # takes over
    assert ledger.end_batch_close(BATCH, owner="w3", written=True)
    assert (ledger.batch(BATCH) or {})["done_at"] is not None
    assert not ledger.claim_batch_close(BATCH, owner="w4", lease_s=60)  # done


def test_models_in_use_follow_reprocessing(ledger: Ledger) -> None:
    """models_in_use counts the items' current attempts, so a reprocess with another model
    shows up at once."""
    a, _b = add(ledger, "a", "b")
    assert ledger.models_in_use(BATCH) == [("local", "tiny.en", 2)]
    walk(ledger, a, S.SUCCEEDED)
    assert ledger.restart(
        a, spec={"source": "/in/a.wav", "engine": "dashscope", "model": "fun-asr"}
    )
    assert sorted(ledger.models_in_use(BATCH)) == [
        ("dashscope", "fun-asr", 1),
        ("local", "tiny.en", 1),
    ]
    report = batch_status(ledger, BATCH)
    assert report is not None and report["model"] in ("fun-asr, tiny.en", "tiny.en, fun-asr")


def test_sync_can_leave_running_items_alone(ledger: Ledger) -> None:
    """With restart_running=False a changed line restarts only finished items: one in
    flight (maybe mid-submission) keeps its attempt."""
    a, _b = add(ledger, "a", "b")
    walk(ledger, a, S.SUCCEEDED)
    report = ledger.sync_items(
        BATCH,
        [seed("a", "f2"), seed("b", "f2", line=2)],
        engine="local",
        model="tiny.en",
        restart_running=False,
    )
    assert (report.reset, report.unchanged) == (1, 1)
    assert [(r.key, r.attempt) for r in ledger.list_items(BATCH)] == [("a", 2), ("b", 1)]


def test_out_is_reserved_by_one_batch(ledger: Ledger, tmp_path: Path) -> None:
    """reserve_out creates the batch unless another writes to that out; then it names it."""
    out = str(tmp_path / "shared")
    assert (
        ledger.reserve_out(
            "b1", out=out, kind="submit", engine="local", model="tiny.en", manifest="/m1"
        )
        is None
    )
    held = ledger.reserve_out(
        "b2", out=out, kind="submit", engine="local", model="tiny.en", manifest="/m2"
    )
    assert held is not None and held["id"] == "b1" and held["manifest"] == "/m1"
    assert ledger.batch("b2") is None


# -- new attempts: states.can_start_attempt, checked before any SQL, compare-and-set ------


def put(ledger: Ledger, item_id: str, state: ItemState) -> None:
    """Brings a PENDING item to ``state`` by allowed moves."""
    if state is S.TRANSCRIBING:
        assert walk(ledger, item_id, S.PREPARED)
        assert ledger.move(item_id, S.PREPARED, S.TRANSCRIBING)
    elif state in (S.FAILED, S.DEAD):
        failure = Failure.permanent("corrupt", "bad")
        assert ledger.fail(item_id, S.PENDING, failure, dead=state is S.DEAD)
    elif state in (S.CANCELLED, S.SKIPPED):
        assert ledger.move(item_id, S.PENDING, state)
    else:
        assert walk(ledger, item_id, state)


@contextmanager
def racing(ledger: Ledger, meanwhile: Callable[[], object]) -> Iterator[None]:
    """Runs ``meanwhile`` on another connection just before the next UPDATE of ``items``
    goes out: a worker's move landing between a read and the write that follows it."""
    fired: list[bool] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("UPDATE ITEMS"):
            fired.append(True)
            meanwhile()

    event.listen(ledger.engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(ledger.engine, "before_cursor_execute", before)
    assert fired, "no UPDATE of items went out"


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_a_finished_item_starts_a_new_attempt(ledger: Ledger, state: ItemState) -> None:
    """From every finished state, restart() and a forced sync (without restart_running)
    each open the next attempt at PENDING."""
    (item,) = add(ledger, "a")
    put(ledger, item, state)
    assert ledger.restart(item)
    row = ledger.get(item)
    assert row is not None and (row.state, row.attempt) == (S.PENDING, 2)
    put(ledger, item, state)
    report = ledger.sync_items(
        BATCH, [seed("a")], engine="local", model="tiny.en", force=True, restart_running=False
    )
    assert (report.reset, report.unchanged, report.kept) == (1, 0, ())
    row = ledger.get(item)
    assert row is not None and (row.state, row.attempt) == (S.PENDING, 3)
    assert [n for n, _ in attempt_rows(ledger, item)] == [1, 2, 3]


@pytest.mark.parametrize("state", sorted(set(S) - TERMINAL))
def test_restart_of_an_unfinished_item_is_refused(ledger: Ledger, state: ItemState) -> None:
    """restart() is for finished items: from any other state it raises illegal_transition
    and the row keeps its state, attempt and lease."""
    (item,) = add(ledger, "a")
    put(ledger, item, state)
    before = ledger.get(item)
    with pytest.raises(TransitionRefused) as info:
        ledger.restart(item)
    assert info.value.code is FailureCode.ILLEGAL_TRANSITION
    assert ledger.get(item) == before
    assert len(attempt_rows(ledger, item)) == 1


def test_restart_from_an_expected_state_the_rule_forbids_raises_before_any_sql(
    ledger: Ledger,
) -> None:
    """The caller's expected state is checked first, whatever state the row is really in;
    an allowed one the row is no longer in is a lost race (False), not an error."""
    (item,) = add(ledger, "a")
    put(ledger, item, S.FAILED)
    with pytest.raises(TransitionRefused):
        ledger.restart(item, expected=S.PREPARING)
    assert ledger.restart(item, expected=S.DEAD) is False
    row = ledger.get(item)
    assert row is not None and (row.state, row.attempt) == (S.FAILED, 1)
    assert ledger.restart(item, expected=S.FAILED)


@pytest.mark.parametrize("running", [True, False])
@pytest.mark.parametrize("state", list(S))
def test_sync_starts_new_attempts_only_where_the_rule_allows(
    ledger: Ledger, state: ItemState, running: bool
) -> None:
    """A changed line resets a finished item always, PENDING/PREPARED/SUBMITTED only with
    restart_running, a claimed item never (its worker keeps the lease): the row is kept,
    counted unchanged and named in the report."""
    (item,) = add(ledger, "a")
    put(ledger, item, state)
    before = ledger.get(item)
    report = ledger.sync_items(
        BATCH, [seed("a", "f2")], engine="local", model="tiny.en", restart_running=running
    )
    row = ledger.get(item)
    assert row is not None
    if can_start_attempt(state, S.PENDING, running=running):
        assert (report.reset, report.kept) == (1, ())
        assert (row.state, row.attempt, row.fingerprint) == (S.PENDING, 2, "f2")
    else:
        assert (report.reset, report.unchanged, report.kept) == (0, 1, ("a",))
        assert row == before
    assert not (state.claimed and report.reset)


def test_sync_never_overwrites_a_move_made_after_its_read(ledger: Ledger) -> None:
    """--force reads a SUBMITTED item; before its reset goes out, a worker claims it to
    persist. The reset is a compare-and-set on the state read: the claim stands, the item
    keeps its attempt, and the sync counts it unchanged."""
    a, b = add(ledger, "a", "b")
    put(ledger, a, S.SUBMITTED)
    put(ledger, b, S.SUCCEEDED)

    def claim() -> None:
        assert ledger.claim(a, S.SUBMITTED, S.PERSISTING, owner="w1", lease_s=60)

    with racing(ledger, claim):
        report = ledger.sync_items(
            BATCH, [seed("a"), seed("b", line=2)], engine="local", model="tiny.en", force=True
        )
    assert (report.reset, report.unchanged, report.kept) == (1, 1, ("a",))
    row = ledger.get(a)
    assert row is not None
    assert (row.state, row.attempt, row.lease_owner) == (S.PERSISTING, 1, "w1")
    assert len(attempt_rows(ledger, a)) == 1
    row = ledger.get(b)
    assert row is not None and (row.state, row.attempt) == (S.PENDING, 2)


def test_a_replay_racing_a_purge_changes_nothing(ledger: Ledger) -> None:
    """An operator replays a DEAD item while another purges it: the purge lands between the
    replay's read and its write, so the replay's compare-and-set finds FAILED and gives up."""
    (item,) = add(ledger, "a")
    put(ledger, item, S.DEAD)
    with racing(ledger, lambda: ledger.move(item, S.DEAD, S.FAILED)):
        assert ledger.restart(item, expected=S.DEAD) is False
    row = ledger.get(item)
    assert row is not None and (row.state, row.attempt) == (S.FAILED, 1)
    assert len(attempt_rows(ledger, item)) == 1


def test_migration_0011_marks_the_dead_already_announced(tmp_path: Path) -> None:
    """DEAD items announced before 0011 are marked on their rows, so the sweep's read (the
    partial index of those not marked, usable on SQLite too) announces only the ones never
    announced, and an item that died again on a later attempt. Going back to 0010 drops the
    column in place: the item_counts triggers stay."""
    from alembic import command
    from sqlalchemy import text

    from pipeline.ledger import alembic_config, make_engine, migrate
    from pipeline.notify.outbox import note_dead
    from pipeline.settings import NotifySettings

    engine = make_engine(sqlite_url(tmp_path / "old.db"))
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
        conn.execute(
            text(
                "INSERT INTO batches (id, kind, out, engine, model, options, created_at)"
                " VALUES ('b', 'run', '/o', 'local', 'tiny.en', '{}', '2026-01-01')"
            )
        )
        # i0 announced; i1 announced at attempt 1, dead again at 2; i2 never; i3 not DEAD.
        for n, (state, attempt, noted) in enumerate(
            [("DEAD", 1, 1), ("DEAD", 2, 1), ("DEAD", 1, None), ("SUCCEEDED", 1, None)]
        ):
            conn.execute(
                text(
                    "INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint,"
                    " state, attempt, tries, polls, created_at, updated_at)"
                    " VALUES (:id, 'b', :id, :n, '/a', '{}', 'f', :state, :attempt, 0, 0,"
                    " '2026-01-01', '2026-01-01')"
                ),
                {"id": f"i{n}", "n": n, "state": state, "attempt": attempt},
            )
            if noted is not None:
                conn.execute(
                    text(
                        "INSERT INTO notify_dead_noted (item_id, attempt, noted_at)"
                        " VALUES (:id, :attempt, '2026-01-01')"
                    ),
                    {"id": f"i{n}", "attempt": noted},
                )
    migrate(engine)
    with engine.connect() as conn:
        marked = dict(conn.execute(text("SELECT id, dead_noted FROM items")).all())
        # INDEXED BY fails ("no query solution") unless the index can serve the query.
        usable = conn.execute(
            text(
                "SELECT id FROM items INDEXED BY ix_items_dead_unnoted WHERE state = 'DEAD'"
                " AND (dead_noted IS NULL OR dead_noted <> attempt) ORDER BY batch_id, line_no"
            )
        ).scalars()
        assert list(usable) == ["i1", "i2"]
    assert marked == {"i0": 1, "i1": None, "i2": None, "i3": None}
    assert note_dead(engine, NotifySettings()) == 2
    assert note_dead(engine, NotifySettings()) == 0
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
        columns = {c["name"] for c in inspect(conn).get_columns("items")}
        triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert "items_counted_update" in set(triggers.scalars())
    engine.dispose()
    assert "dead_noted" not in columns


# --- many items per statement (a worker's packed messages) -----------------------------------


def test_claim_many_takes_only_rows_still_in_the_state(ledger: Ledger) -> None:
    """One claim for several items: those already taken stay with their holder."""
    a, b, c = add(ledger, "a", "b", "c")
    assert ledger.claim(b, S.PENDING, S.PREPARING, owner="w1", lease_s=60) is not None
    got = ledger.claim_many([a, b, c], S.PENDING, S.PREPARING, owner="w2", lease_s=60)
    assert sorted(r.key for r in got) == ["a", "c"]
    assert all(r.state is S.PREPARING and r.lease_owner == "w2" for r in got)
    assert ledger.get(b).lease_owner == "w1"  # type: ignore[union-attr]
    with pytest.raises(TransitionRefused):
        ledger.claim_many([a], S.PENDING, S.SUCCEEDED, owner="w2", lease_s=60)


def test_move_many_matches_one_move_each(ledger: Ledger) -> None:
    """move_many writes what move writes, item and attempt, each row its own values; a row
    held by another owner, or no longer in the state, is left alone."""
    a, b, c, d = add(ledger, "a", "b", "c", "d")
    for item in (a, b, c, d):
        walk(ledger, item, S.SUBMITTED)
    for item, owner in ((a, "w1"), (b, "w1"), (d, "w2")):
        assert ledger.claim(item, S.SUBMITTED, S.PERSISTING, owner=owner, lease_s=60)
    timings = {"persist": 0.25}
    moves = [
        Move(
            item,
            {"outputs": {"txt": f"/out/{key}.txt"}, "timings": timings, "failure": None},
            {"state": "SUCCEEDED", "finished_at": utcnow(), "timings": timings},
        )
        for item, key in ((a, "a"), (b, "b"), (c, "c"), (d, "d"))
    ]
    moved = ledger.move_many(moves, S.PERSISTING, S.SUCCEEDED, owner="w1")
    assert moved == {a, b}
    for item, key in ((a, "a"), (b, "b")):
        row = ledger.get(item)
        assert row is not None
        assert (row.state, row.lease_owner, row.lease_until) == (S.SUCCEEDED, None, None)
        assert row.outputs == {"txt": f"/out/{key}.txt"} and row.finished_at is not None
        assert row.error_code is None and row.next_run_at is None
        (att,) = ledger.attempts_of(item)
        assert (att["state"], att["timings"]) == ("SUCCEEDED", timings)
        assert att["finished_at"] is not None
    assert ledger.get(c).state is S.SUBMITTED  # type: ignore[union-attr]
    still = ledger.get(d)
    assert still is not None and (still.state, still.lease_owner) == (S.PERSISTING, "w2")
    assert ledger.attempts_of(d)[0]["finished_at"] is None
    report = batch_status(ledger, BATCH)  # the kept per-state counts follow
    assert report is not None
    assert report["counts"] == {"SUCCEEDED": 2, "SUBMITTED": 1, "PERSISTING": 1}


def test_move_many_with_hostile_values(ledger: Ledger) -> None:
    """Values travel as JSON: quotes, backslashes, NUL-free control characters and
    non-ASCII text come back as written."""
    (a,) = add(ledger, "a")
    ledger.claim(a, S.PENDING, S.PREPARING, owner="w1", lease_s=60)
    url = "https://x/a'b\"c\\d\t\n€?q=1&r=';DROP TABLE items;--"
    moved = ledger.move_many(
        [Move(a, {"media_url": url, "outputs": {"k'\"": url}})],
        S.PREPARING,
        S.PREPARED,
        owner="w1",
    )
    assert moved == {a}
    row = ledger.get(a)
    assert row is not None and row.media_url == url and row.outputs == {"k'\"": url}


def test_by_tasks_and_media_guard_many(ledger: Ledger) -> None:
    """Rows of several provider tasks in one read; the keys of stored audio still needed."""
    a, b, c = add(ledger, "a", "b", "c")
    for item, task, key in ((a, "t1", "m1"), (b, "t1", "m2"), (c, "t2", "m2")):
        ledger.set_fields(item, provider_task_id=task, media_key=key)
    found = ledger.by_tasks(["t2", "t1", "t3"])
    assert {t: [r.key for r in rows] for t, rows in found.items()} == {
        "t2": ["c"],
        "t1": ["a", "b"],
        "t3": [],
    }
    ledger.claim(a, S.PENDING, S.PREPARING, owner="w", lease_s=60)
    ledger.fail(a, S.PREPARING, Failure.permanent("not_found", "gone"), owner="w")
    with ledger.media_guard_many(["m2", "m1", "m3", "m2"]) as in_use:
        assert in_use() == {"m2"}
