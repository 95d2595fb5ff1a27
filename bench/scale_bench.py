"""Scale: the embedded run per item, intake into PostgreSQL, and a large ledger's reads.

One table of figures and ratios, from three parts (``--only`` picks some):

- ``embedded``: real ``bulkscribe run`` of manifests of N missing files (the run's intake
  fails each with not_found, in the one transaction that enters the manifest: the whole
  run is timed) and of N empty files (each is claimed and fails at its probe with
  empty_audio before ffprobe runs, so what is left is the driver's own work per item). A
  one-line run is timed first and its wall time (start-up) taken off. Targets: 100,000
  missing files in under a minute; per-item overhead flat from the smallest size to the
  largest (ratio <= 1.5).
- ``intake``: ``bulkscribe submit`` of an N-line manifest against PostgreSQL: wall time,
  items/s and peak RSS (os.wait4 of the child), next to a plain COPY of the same rows (the
  floor), then ``status`` of that batch (in-process, and the whole command).
- ``ledger``: ledgers seeded directly in SQL (generate_series) as a bulk load (keys and
  indexes built after the rows, counts written once; see :func:`seed`): a finished batch of
  N items (with their attempts up to a million), and 10,000 items in flight in another.
  Timed: ``status`` of the finished batch (in-process, the whole command, and the console's
  batch summary), the ledger work of one sweep (expired leases, due rows, room counts, open
  batches, newly DEAD items, due webhooks, folding item_counts, the metrics' items by state;
  the broker is left out), and that metrics read alone against counting the items table,
  at each size.

    python bench/scale_bench.py                     # minutes: 1k/10k embedded, 100k submit,
                                                    # ledgers of 1M and 3M finished rows
    python bench/scale_bench.py --full              # 100k embedded, 1M submit, 10M rows
    python bench/scale_bench.py --only ledger --ledger 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

BIN = Path(sys.executable).parent
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

Row = tuple[str, str, str]  # what, measured, target


# -- shared ---------------------------------------------------------------------------
@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"bulkscribe_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def private_redis() -> Iterator[str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


def best_ms(fn: Callable[[], Any], k: int = 5) -> float:
    """The best of k timed calls after one warm-up (other jobs on the machine only add)."""
    fn()
    times = []
    for _ in range(k):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def command(argv: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS in MB, stdout and CPU seconds (user + system) of one command:
    CPU is what to compare on a shared machine, where other load stretches wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - started, usage.ru_maxrss / 1024, out.decode(), cpu


def status_command(url: str, batch: str) -> str:
    """The whole ``bulkscribe status BATCH --json``: best wall and CPU seconds of three."""
    env = {**os.environ, "BULKSCRIBE_DATABASE_URL": url}
    runs = [command([str(BIN / "bulkscribe"), "status", batch, "--json"], env) for _ in range(3)]
    return f"{min(r[0] for r in runs):.2f} s wall, {min(r[3] for r in runs):.2f} s CPU"


# -- embedded -------------------------------------------------------------------------
def missing_files_manifest(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"m{i}", "source": f"/nonexistent/bench/{i}.wav"}) + "\n")
    return path


def empty_files_manifest(path: Path, n: int) -> Path:
    folder = path.with_suffix("")
    folder.mkdir()
    with path.open("w") as f:
        for i in range(n):
            (folder / f"{i}.wav").touch()
            f.write(json.dumps({"id": f"e{i}", "source": str(folder / f"{i}.wav")}) + "\n")
    return path


def run_s(manifest: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one real ``bulkscribe run``; every item must
    have failed. CPU is what to compare on a shared machine: other load stretches
    wall time, not the run's own CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "bulkscribe"), "run", str(manifest), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(proc.stdout)
    if proc.returncode != 1 or summary["counts"] != {"FAILED": summary["total"]}:
        raise SystemExit(f"unexpected run: exit {proc.returncode}, {summary['counts']}")
    return wall, cpu


def embedded(sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bulkscribe-scale-") as tmp:
        root = Path(tmp)
        base = min(
            (
                run_s(missing_files_manifest(root / f"m1-{k}.jsonl", 1), root / f"o1-{k}")
                for k in range(2)
            ),
            key=lambda t: t[0],
        )
        rows.append(
            ("embedded start-up (1-line run)", f"{base[0]:.2f} s wall, {base[1]:.2f} s CPU", "")
        )
        for label, make, loop_sizes in (
            ("missing files (failed at intake)", missing_files_manifest, sizes),
            ("empty files (a step each)", empty_files_manifest, sizes[:2]),
        ):
            per = []
            for n in loop_sizes:
                manifest = make(root / f"{make.__name__}{n}.jsonl", n)
                wall, cpu = run_s(manifest, root / f"o-{make.__name__}{n}")
                per.append((n, wall, (wall - base[0]) / n * 1000, (cpu - base[1]) / n * 1000))
                rows.append(
                    (
                        f"embedded run of {n:,} {label}, per item",
                        f"CPU {per[-1][3]:.2f} ms, wall {per[-1][2]:.2f} ms ({wall:.1f} s)",
                        "100,000 in < 60 s"
                        if n == 100_000 and make is missing_files_manifest
                        else "",
                    )
                )
            (n0, _, w0, c0), (n1, _, w1, c1) = per[0], per[-1]
            rows.append(
                (
                    f"embedded per-item overhead, {label}, {n1:,} / {n0:,} lines",
                    f"CPU {c1 / c0:.2f}x, wall {w1 / w0:.2f}x",
                    "flat (<= 1.5x)",
                )
            )
    return rows


# -- intake ---------------------------------------------------------------------------
def submit_manifest(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"rec-{i:07d}", "source": f"/data/rec-{i:07d}.wav"}) + "\n")


def copy_floor(url: str, n: int) -> float:
    """COPY n item rows and their attempts into a fresh batch: the database's own floor."""
    now = "2026-01-01 00:00:00+00"
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO batches (id, kind, out, engine, model, options, created_at) "
            "VALUES ('floor', 'submit', '/tmp/floor', 'local', 'tiny.en', '{}', now())"
        )
        ids = [uuid.uuid4().hex for _ in range(n)]
        with cur.copy(
            "COPY items (id, batch_id, key, line_no, source, spec, fingerprint, state,"
            " attempt, tries, polls, created_at, updated_at) FROM STDIN"
        ) as cp:
            for i, item_id in enumerate(ids):
                spec = json.dumps(
                    {
                        "id": f"rec-{i:07d}",
                        "source": f"/data/rec-{i:07d}.wav",
                        "engine": "local",
                        "model": "tiny.en",
                        "language": None,
                        "options": {},
                    }
                )
                key, source = f"rec-{i:07d}", f"/data/rec-{i:07d}.wav"
                row = (item_id, "floor", key, i + 1, source, spec, "0" * 64, "PENDING")
                cp.write_row((*row, 1, 0, 0, now, now))
        with cur.copy(
            "COPY attempts (item_id, number, engine, model, options, state,"
            " started_at, timings) FROM STDIN"
        ) as cp:
            for item_id in ids:
                cp.write_row((item_id, 1, "local", "tiny.en", "{}", "RUNNING", now, "{}"))
        conn.commit()
    return time.perf_counter() - started


def intake(sizes: list[int]) -> list[Row]:
    from pipeline.ledger import open_ledger
    from pipeline.outputs.report import batch_status

    rows: list[Row] = []
    with private_redis() as broker:
        for n in sizes:
            with scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
                env = {
                    **os.environ,
                    "BULKSCRIBE_DATABASE_URL": url,
                    "BULKSCRIBE_BROKER_URL": broker,
                }
                path = Path(tmp) / "m.jsonl"
                submit_manifest(path, n)
                argv = [str(BIN / "bulkscribe"), "submit", str(path), "--out", f"{tmp}/out"]
                wall, rss, out, _ = command([*argv, "--json"], env)
                batch = json.loads(out)["batch_id"]
                ledger = open_ledger(url)
                status_ms = best_ms(partial(batch_status, ledger, batch), k=3)
                ledger.engine.dispose()
                status_cmd = status_command(url, batch)
                floor = copy_floor(url, n)
            rows += [
                (
                    f"submit of {n:,} lines",
                    f"{wall:.1f} s, {n / wall:,.0f} items/s, peak RSS {rss:.0f} MB "
                    f"(COPY of the same rows: {floor:.1f} s, {wall / floor:.2f}x)",
                    ">= 10,000 items/s, < 300 MB",
                ),
                (
                    f"status right after that submit ({n:,} PENDING items)",
                    f"{status_ms:.0f} ms in-process; the command {status_cmd}",
                    "< 0.5 s",
                ),
            ]
    return rows


# -- ledger ---------------------------------------------------------------------------
BATCH = """INSERT INTO batches (id, kind, out, engine, model, options, created_at, done_at)
VALUES ('{b}', 'submit', '/tmp/{b}', 'dashscope', 'paraformer-v2', '{{}}',
        now() - interval '1 day', {done})"""
# Finished items: mostly SUCCEEDED, 1 in 97 FAILED, 1 in 1009 DEAD (announced already: in
# notify_dead_noted and marked on the row, as the sweep or a worker leaves them); the first
# 5,000 carry stage timings.
FINISHED = """INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint, state,
  attempt, tries, polls, created_at, updated_at, finished_at, audio_duration_ms, error_code,
  error_message, timings, dead_noted)
SELECT md5('{b}' || g), '{b}', 'rec-' || g, g, '/data/rec-' || g || '.wav', '{{}}', 'f',
  CASE WHEN g % 97 = 0 THEN 'FAILED' WHEN g % 1009 = 0 THEN 'DEAD' ELSE 'SUCCEEDED' END,
  1, 0, 2, now() - interval '1 day', now(), now() - interval '1 hour', 60000,
  CASE WHEN g % 97 = 0 THEN 'not_found' END, CASE WHEN g % 97 = 0 THEN 'gone' END,
  CASE WHEN g <= 5000 THEN '{{"prepare": 0.4, "transcribe": 2.5}}'::json END,
  CASE WHEN g % 97 <> 0 AND g % 1009 = 0 THEN 1 END
FROM generate_series({lo}, {hi}) g"""
ATTEMPTS = """INSERT INTO attempts (item_id, number, engine, model, options, state,
  started_at, finished_at, timings)
SELECT md5('{b}' || g), 1, 'dashscope', 'paraformer-v2', '{{}}', 'SUCCEEDED', now(), now(), '{{}}'
FROM generate_series({lo}, {hi}) g"""
DEAD_NOTED = """INSERT INTO notify_dead_noted (item_id, attempt, noted_at)
SELECT md5('{b}' || g), 1, now() FROM generate_series(1009, {n}, 1009) g WHERE g % 97 <> 0"""
# In flight: spread over the states a sweep looks at; 1 in 10 of them due now.
IN_FLIGHT = """INSERT INTO items (id, batch_id, key, line_no, source, spec, fingerprint,
  state, attempt, tries, polls, created_at, updated_at, next_run_at, lease_owner,
  lease_until, provider_task_id)
SELECT md5('live' || g), 'live', 'live-' || g, g, '/data/live-' || g || '.wav', '{{}}', 'f',
  (ARRAY['PENDING','PREPARING','PREPARED','SUBMITTING','SUBMITTED','PERSISTING'])[1 + g % 6],
  1, 0, 0, now(), now(),
  CASE WHEN g % 10 = 0 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END,
  CASE WHEN g % 6 IN (1, 3, 5) THEN 'w1' END,
  CASE WHEN g % 6 IN (1, 3, 5) THEN now() + interval '10 minutes' END,
  CASE WHEN g % 6 IN (4, 5) THEN 'task-' || (g / 10) END
FROM generate_series(1, {n}) g"""

# The bulk load's tables: their keys and indexes are dropped before it and built after it
# (one sort each instead of ten million random inserts), exactly as they were.
LOADED = ("items", "attempts")
KEYS = """SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE contype IN ('p', 'u', 'f')
  AND (conrelid = ANY(%(t)s::regclass[]) OR confrelid = ANY(%(t)s::regclass[]))
ORDER BY contype = 'f', conname"""
INDEXES = """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid = ANY(%(t)s::regclass[]) AND NOT EXISTS (
  SELECT 1 FROM pg_constraint c
  WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u'))
ORDER BY 1"""
SCHEMA = """SELECT tablename, indexname, indexdef FROM pg_indexes
WHERE tablename = ANY(%(t)s) ORDER BY 1, 2"""


def _progress(started: float, what: str) -> None:
    """Where the seed is, on stderr: a long one can be watched (and stopped) as it goes."""
    print(f"[seed {time.perf_counter() - started:6.0f} s] {what}", file=sys.stderr, flush=True)


def seed(url: str, finished: int, *, attempts: bool, in_flight: int = 10_000) -> float:
    """Seconds to seed ``finished`` rows in batch 'done' (attempts too, if asked) and
    ``in_flight`` in batch 'live', into the bench's own scratch database, migrated to head.

    A bulk load, ending in the ledger the product would hold: the items' (and attempts')
    keys, foreign keys and indexes are dropped and built again after the rows are in, with
    the same definitions (checked); the count triggers are off during the load
    (``session_replication_role = replica``) and ``item_counts`` / ``attempt_models`` are
    written once by migration 0009's own backfill, which is what folding the triggers'
    deltas would leave (the sweep folds them)."""
    from importlib import import_module

    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex

    from pipeline.ledger.tables import metadata

    counts = import_module("pipeline.ledger.migrations.versions.0009_counts_and_due_indexes")
    # Indexes are built again from their declarations, as the migrations built them: the
    # text PostgreSQL gives back for a predicate like "state IN (...)" parses to another
    # expression tree than the one it was made from.
    declared = {
        str(index.name): str(CreateIndex(index).compile(dialect=postgresql.dialect()))
        for table in LOADED
        for index in metadata.tables[table].indexes
    }
    started = time.perf_counter()
    tables = {"t": list(LOADED)}
    with psycopg.connect(url, autocommit=True) as conn:
        # A scratch database: a crash loses it anyway, so commits need not wait for the disk;
        # the sorts of the index builds and the backfill fit in memory.
        for setting in (
            "SET synchronous_commit = off",
            "SET maintenance_work_mem = '1GB'",
            "SET work_mem = '256MB'",
        ):
            conn.execute(setting)
        schema = conn.execute(SCHEMA, tables).fetchall()
        keys = conn.execute(KEYS, tables).fetchall()
        indexes = conn.execute(INDEXES, tables).fetchall()
        for table, name, _kind, _definition in reversed(keys):  # foreign keys first
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("SET session_replication_role = replica")  # no count triggers
        conn.execute(BATCH.format(b="done", done="now()"))
        for lo in range(1, finished + 1, 1_000_000):
            hi = min(finished, lo + 999_999)
            conn.execute(FINISHED.format(b="done", lo=lo, hi=hi))
            if attempts:
                conn.execute(ATTEMPTS.format(b="done", lo=lo, hi=hi))
            _progress(started, f"{hi:,} rows")
        conn.execute(DEAD_NOTED.format(b="done", n=finished))
        conn.execute(BATCH.format(b="live", done="NULL"))
        conn.execute(IN_FLIGHT.format(n=in_flight))
        conn.execute(counts.BACKFILL)
        conn.execute(counts.BACKFILL_MODELS)
        conn.execute("SET session_replication_role = DEFAULT")
        _progress(started, "rows and counts in")
        for table, name, _kind, definition in keys:  # keys first, foreign keys last
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            _progress(started, name)
        for name, definition in indexes:
            conn.execute(declared.get(name, definition))
            _progress(started, name)
        again = conn.execute(SCHEMA, tables).fetchall() + conn.execute(KEYS, tables).fetchall()
        if again != schema + keys:
            lost = set(schema + keys) ^ set(again)
            raise SystemExit(f"seed: keys and indexes built again differ: {sorted(lost)}")
        conn.execute("VACUUM ANALYZE")
    _progress(started, "vacuumed and analyzed")
    return time.perf_counter() - started


def sweep_ledger_work(ledger: Any) -> None:
    """What one sweep asks of the ledger (workers/sweeper.py), without the broker."""
    from pipeline.ledger import utcnow
    from pipeline.ledger.budgets import count_parked
    from pipeline.ledger.counts import fold_all, state_totals
    from pipeline.notify.outbox import count_due, note_dead
    from pipeline.settings import NotifySettings
    from pipeline.states import ItemState

    ledger.release_expired()
    ledger.due_rows(utcnow())
    ledger.count_states(ItemState.PREPARING, ItemState.PREPARED)
    count_parked(ledger)
    ledger.inflight_tasks()
    ledger.open_batches()
    note_dead(ledger.engine, NotifySettings())
    fold_all(ledger.engine)
    count_due(ledger.engine)
    state_totals(ledger.engine)  # the metrics' items by state (workers/metrics.py)


# The sweep's DEAD read before migration 0011: every DEAD item, each looked up in
# notify_dead_noted (timed beside note_dead for comparison).
DEAD_READ_BEFORE = """SELECT i.id, i.key, i.batch_id, i.attempt FROM items i
WHERE i.state = 'DEAD' AND NOT EXISTS (
  SELECT 1 FROM notify_dead_noted d WHERE d.item_id = i.id AND d.attempt = i.attempt)
ORDER BY i.batch_id, i.line_no LIMIT 5000"""


def ledger_reads(sizes: list[int], *, attempts_up_to: int = 1_000_000) -> list[Row]:
    from pipeline.console.queries import batch_summary
    from pipeline.ledger import open_ledger
    from pipeline.ledger.counts import state_totals
    from pipeline.notify.outbox import note_dead
    from pipeline.outputs.report import batch_status
    from pipeline.settings import NotifySettings

    rows: list[Row] = []
    for n in sizes:
        with scratch_database() as url:
            ledger = open_ledger(url)
            with_attempts = n <= attempts_up_to
            seeded = seed(url, n, attempts=with_attempts)
            sweep = best_ms(partial(sweep_ledger_work, ledger))
            # The metrics' items by state: item_counts now; counting the items table, as
            # they did before, timed once (and what it finds must be what item_counts says).
            metrics = best_ms(partial(state_totals, ledger.engine))
            counting = time.perf_counter()
            counted = ledger.counts(None)
            counting = time.perf_counter() - counting
            if counted != state_totals(ledger.engine):
                raise SystemExit(f"item_counts disagree with the items: {counted}")
            dead = best_ms(partial(note_dead, ledger.engine, NotifySettings()))
            with psycopg.connect(url, autocommit=True) as raw:
                dead_before = best_ms(lambda: raw.execute(DEAD_READ_BEFORE).fetchall())
            status = best_ms(partial(batch_status, ledger, "done"))
            summary = best_ms(partial(batch_summary, ledger, "done"))
            status_cmd = status_command(url, "done")
            attempt_rows = "with attempts" if with_attempts else "no attempt rows"
            rows += [
                (
                    f"sweep, {n:,} finished rows + 10,000 in flight (seeded in {seeded:.0f} s)",
                    f"{sweep:.0f} ms",
                    "< 200 ms",
                ),
                (
                    f"metrics: items by state, {n + 10_000:,} items",
                    f"{metrics:.1f} ms from item_counts"
                    f" (counting the items instead: {counting * 1000:.0f} ms)",
                    "",
                ),
                (
                    f"DEAD items to announce (none due; {n // 1009 - n // 97873:,} DEAD announced)",
                    f"{dead:.1f} ms (the read before migration 0011: {dead_before:.1f} ms)",
                    "",
                ),
                (
                    f"status of a {n:,}-item finished batch ({attempt_rows})",
                    f"{status:.0f} ms in-process; the command {status_cmd}",
                    "< 0.5 s",
                ),
                (f"console batch summary, {n:,} items", f"{summary:.0f} ms", "< 300 ms"),
            ]
            ledger.engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the larger sizes (an hour)")
    parser.add_argument("--only", default="embedded,intake,ledger")
    parser.add_argument("--embedded", type=int, nargs="*")
    parser.add_argument("--intake", type=int, nargs="*")
    parser.add_argument("--ledger", type=int, nargs="*")
    args = parser.parse_args()
    sizes = {
        "embedded": args.embedded or ([1_000, 10_000, 100_000] if args.full else [1_000, 10_000]),
        "intake": args.intake or ([100_000, 1_000_000] if args.full else [100_000]),
        "ledger": args.ledger or ([1_000_000, 10_000_000] if args.full else [1_000_000, 3_000_000]),
    }
    parts = {"embedded": embedded, "intake": intake, "ledger": ledger_reads}
    rows: list[Row] = []
    for name in args.only.split(","):
        rows += parts[name](sizes[name])
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 cores shared)\n")
    print("| what | measured | target |\n|---|---|---|")
    for what, measured, target in rows:
        print(f"| {what} | {measured} | {target} |")


if __name__ == "__main__":
    main()
