"""Distributed mode under load: makespan vs the ideal, CPU per item, memory with 10k in flight.

Everything real except the model: our own ``redis-server`` (broker, gate, redbeat), a fresh
PostgreSQL database (ledger, dropped at the end), ``moto_server`` (S3 for the normalized
audio, so the provider gets presigned HTTP URLs), the DashScope emulator over HTTP (in this
process, recognition by a stand-in engine that answers at once), and ``bulkscribe worker`` /
``bulkscribe beat`` subprocesses.

Items are seeded PREPARED (one short normalized FLAC, shared by content address): the bench
measures the distributed machinery (sweeper, queues, ledger, submit/poll/persist), not
ffmpeg. Three parts:

a) makespan of N single-file tasks against an emulator with latency L and C slots, as a
   ratio to the ideal ceil(N/C)·L, for a few poll/in-flight settings;
b) CPU per item in our worker processes (utime+stime from /proc, main and pool children),
   emulator latency 0, plus what beat, redis-server and our PostgreSQL backends spent;
c) N items SUBMITTED at once (default 10,000): RSS of each worker node sampled from /proc
   while they are submitted and wait; min/max reported.

Part (b)'s submissions come from the sweeper, which sends a burst packed (several jobs per
message); ``--handoff`` sends one submit message per item instead, as prepare steps hand them
off one at a time, to show what the packing of the polls that follow saves on its own;
``--cap C`` runs it at an in-flight cap of C tasks, as a fleet through a long batch runs.

Part (b) ends with the number the target is about: each run's CPU per item less the item's
own work measured in-process (provider HTTP, outputs, presigning, step logic), that is, what
the ledger and the broker cost. This VM's CPU time varies by ±15 % between runs; ``--repeat``
runs each pool several times and reports the median.

Usage: ``.venv/bin/python bench/distributed_bench.py [--n 1000] [--latency 2] [--slots 20]
[--overhead-n 500] [--repeat 1] [--pools prefork,threads] [--batch-size 1] [--handoff]
[--cap C]
[--inflight-n 10000] [--parts abc]`` (``--parts s``: only the in-process steps of (b), in
seconds; ``--parts ap``: (a) with the production poll pacing only).
``BENCH_PYSPY=DIR`` samples the workers with py-spy over each measured batch. Needs
redis-server, PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and ffmpeg.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

# The services, processes and engine stand-in are the distributed tests' own.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "distributed")]

from dist_support import (  # noqa: E402
    API_KEY,
    MEDIA_BUCKET,
    EchoEngine,
    empty_ledger,
    service_env,
)
from support import (  # noqa: E402
    AWS_ENV,
    PG_ADMIN,
    Proc,
    RedisServer,
    moto_server,
    scratch_database,
    spawn,
    wait_until,
)
from support.services import BIN  # noqa: E402

from pipeline.emulator import EmulatorConfig, running_emulator  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def group_pids(pgid: int) -> list[int]:
    """Every live process in a process group (a worker node: main + pool children)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[2]) == pgid:  # field 5: pgrp
                out.append(int(entry))
    return out


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes themselves (not their waited-for children)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # fields 14, 15
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else int(fields[21]) * PAGE / 1e6  # field 24: rss pages


# --- services -------------------------------------------------------------------------------


@dataclass
class Services:
    tmp: Path
    redis: RedisServer
    pg_url: str
    moto: str
    emulator: str = ""  # set while an emulator runs (one per measurement: its own C and L)

    @property
    def pg_name(self) -> str:
        return self.pg_url.rsplit("/", 1)[1]

    @contextlib.contextmanager
    def emulating(self, latency_s: float, slots: int) -> Iterator[str]:
        config = EmulatorConfig(latency_s=latency_s, max_concurrency=slots, workers=4)
        with running_emulator(config, engine=EchoEngine()) as base:
            self.emulator = base
            try:
                yield base
            finally:
                self.emulator = ""

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **service_env(self.pg_url, self.redis.url, self.moto, self.emulator, scratch=self.tmp),
            "BULKSCRIBE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
            "BULKSCRIBE_PROVIDER__BATCH_SIZE": "1",  # one file per task: ideal = ceil(N/C)·L
            "BULKSCRIBE_PROVIDER__REQUESTS_PER_S": "5000",
            "BULKSCRIBE_DISTRIBUTED__SWEEP_S": "1",
            "BULKSCRIBE_DISTRIBUTED__LEASE_S": "60",
            "BULKSCRIBE_DISTRIBUTED__REDISPATCH_S": "30",
            **extra,
        }


@contextlib.contextmanager
def services(tmp: Path) -> Iterator[Services]:
    redis = RedisServer(tmp / "redis")
    with (
        scratch_database("bulkscribe_bench") as pg_url,
        moto_server(tmp / "moto", (MEDIA_BUCKET,)) as moto,
    ):
        redis.start()
        try:
            yield Services(tmp, redis, pg_url, moto)
        finally:
            redis.stop()


IDLE_SAMPLE_S = 10.0

# --- one run: workers, beat, seeded items ---------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    label: str
    n: int
    latency_s: float
    slots: int
    inflight_cap: int
    poll_first_s: float
    poll_max_s: float
    nodes: int = 2
    concurrency: int = 4
    pool: str = "prefork"
    sweep_s: float = 1.0
    batch_size: int = 1  # files per Fun-ASR task: 1 makes the ideal ceil(N/C)·L
    # Submissions sent one message per item, as prepare steps hand them off, instead of the
    # sweeper's packed burst.
    handoff: bool = False


@dataclass
class RunResult:
    spec: RunSpec
    makespan_s: float
    emulator: dict[str, float]
    worker_cpu_s: float
    beat_cpu_s: float
    redis_cpu_s: float
    pg_cpu_s: float
    polls: int
    idle_cpu_per_s: float = 0.0  # the workers' CPU while idle (heartbeats, broker polls)
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)


class Run:
    """Workers and beat for one measurement, on a ledger emptied beforehand."""

    def __init__(self, svc: Services, spec: RunSpec, **env: str) -> None:
        self.svc = svc
        self.spec = spec
        self.env = svc.env(
            **{
                "BULKSCRIBE_PROVIDER__MAX_INFLIGHT_TASKS": str(spec.inflight_cap),
                "BULKSCRIBE_POLL__FIRST_S": str(spec.poll_first_s),
                "BULKSCRIBE_POLL__MAX_S": str(spec.poll_max_s),
                "BULKSCRIBE_DISTRIBUTED__SWEEP_S": str(spec.sweep_s),
                "BULKSCRIBE_PROVIDER__BATCH_SIZE": str(spec.batch_size),
                **env,
            }
        )
        self.nodes: list[Proc] = []
        self.beat: Proc | None = None

    def start(self, *, reset: bool = True) -> None:
        if reset:
            _reset(self.svc)
        for i in range(self.spec.nodes):
            log = self.svc.tmp / f"worker{i}.log"
            log.unlink(missing_ok=True)
            self.nodes.append(
                spawn(
                    f"worker{i}",
                    [
                        str(BIN / "bulkscribe"),
                        "worker",
                        "-c",
                        str(self.spec.concurrency),
                        "-P",
                        self.spec.pool,
                        "-n",
                        f"bench{i}-{uuid.uuid4().hex[:4]}@%h",
                    ],
                    log,
                    self.env,
                )
            )
        children = self.spec.concurrency if self.spec.pool == "prefork" else 0
        for node in self.nodes:  # ready: main process plus its pool children
            wait_until(
                lambda node=node: len(group_pids(node.popen.pid)) > children,
                60,
                f"{node.name} to start",
            )
        time.sleep(1.0)  # mingle and consumers up
        self.beat = spawn(
            "beat", [str(BIN / "bulkscribe"), "beat"], self.svc.tmp / "beat.log", self.env
        )

    def stop(self) -> None:
        for proc in [*self.nodes, *([self.beat] if self.beat else [])]:
            proc.stop()

    def worker_pids(self) -> list[int]:
        return [p for node in self.nodes for p in group_pids(node.popen.pid)]


def _reset(svc: Services) -> None:
    from pipeline.ledger import open_ledger

    ledger = open_ledger(svc.pg_url)
    empty_ledger(ledger)
    ledger.engine.dispose()
    svc.redis.client().flushall()


@dataclass(frozen=True)
class Media:
    flac: Path
    key: str
    facts: dict[str, Any]
    ms: int

    def ensure(self, svc: Services) -> None:
        """Put it back: the last item using stored audio deletes it when it finishes."""
        from pipeline.flow.media import MediaKeeper
        from pipeline.storage import open_store

        MediaKeeper(open_store("s3://media/norm", endpoint_url=svc.moto)).keep(self.flac)


def shared_media(svc: Services) -> Media:
    """One short normalized FLAC in the media store, with its probe facts."""
    from pipeline.asr.catalog import model_info
    from pipeline.flow.media import MediaKeeper
    from pipeline.stages.probe import probe
    from pipeline.storage import open_store

    flac = svc.tmp / "clip.flac"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=16000:duration=1",
            "-ac",
            "1",
            "-c:a",
            "flac",
            str(flac),
        ],
        check=True,
    )
    facts = probe(flac, model_info("dashscope", "fun-asr").limits).as_dict()
    os.environ.update(AWS_ENV)
    store = open_store("s3://media/norm", endpoint_url=svc.moto)
    key = MediaKeeper(store).keep(flac)
    seconds = float(facts.get("duration_s") or 1.0)
    return Media(flac, key, facts | {"offset_s": 0.0, "normalized_s": seconds}, int(seconds * 1000))


def seed_prepared(svc: Services, n: int, media: Media, *, marked_s: float | None = None) -> str:
    """A batch of ``n`` items, already PREPARED (as if prepare had run), in a few statements;
    ``marked_s``: not due for the sweeper until then (as if their submits were queued)."""
    from sqlalchemy import text

    from pipeline.inputs.batches import new_batch_id, seeds_for
    from pipeline.ledger import open_ledger
    from pipeline.models import ManifestItem

    media.ensure(svc)
    ledger = open_ledger(svc.pg_url)
    batch = new_batch_id()
    ledger.ensure_batch(
        batch, kind="submit", out=str(svc.tmp / "out" / batch), engine="dashscope", model="fun-asr"
    )
    entries = [ManifestItem(f"b{i:05d}", f"/bench/src{i:05d}.wav", i + 1) for i in range(n)]
    seeds = seeds_for(entries, engine="dashscope", model="fun-asr", language=None)
    ledger.sync_items(batch, seeds, engine="dashscope", model="fun-asr")
    import json

    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE items SET state = 'PREPARED', media_key = :key,"
                " probe = CAST(:probe AS json),"
                " audio_duration_ms = :ms, next_run_at = now() + :marked WHERE batch_id = :batch"
            ),
            {
                "key": media.key,
                "probe": json.dumps(media.facts),
                "ms": media.ms,
                "batch": batch,
                "marked": None if marked_s is None else timedelta(seconds=marked_s),
            },
        )
    ledger.engine.dispose()
    return batch


def hand_off_submits(svc: Services, batch: str) -> None:
    """One submit message per item, as each item's prepare step sends it."""
    from pipeline.ledger import open_ledger
    from pipeline.settings import load_settings
    from workers.app import app, configure

    ledger = open_ledger(svc.pg_url)
    ids = [r.id for r in ledger.list_items(batch)]
    ledger.engine.dispose()
    saved = dict(os.environ)
    os.environ.update(svc.env())
    try:
        configure(app, load_settings())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    for item_id in ids:
        app.send_task("bulkscribe.submit", args=([item_id],))


def ledger_counts(svc: Services, batch: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(svc.pg_url) as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM items WHERE batch_id = %s GROUP BY state", (batch,)
        ).fetchall()
    return {state: n for state, n in rows}


def _finished(svc: Services, batch: str, n: int) -> bool:
    counts = ledger_counts(svc, batch)
    return sum(v for k, v in counts.items() if k in ("SUCCEEDED", "FAILED", "DEAD")) == n


def finish_times(svc: Services, batch: str) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(svc.pg_url) as conn:
        lo, hi = conn.execute(
            "SELECT extract(epoch FROM min(finished_at)),"
            " extract(epoch FROM max(finished_at)) FROM items"
            " WHERE batch_id = %s",
            (batch,),
        ).fetchone()
    return float(lo), float(hi)


def service_cpu(svc: Services) -> tuple[float, float]:
    """(redis-server, this database's PostgreSQL backends) CPU seconds so far."""
    import psycopg

    redis_pids = [svc.redis.proc.pid] if svc.redis.proc else []
    with psycopg.connect(PG_ADMIN) as conn:
        pg_pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (svc.pg_name,)
            )
        ]
    return cpu_s(redis_pids), cpu_s(pg_pids)


def emulator_times(svc: Services, since: float, slots: int) -> dict[str, float]:
    """From the emulator's task list: first submission to last end, and per-task seconds
    spent waiting for a slot and running (mean)."""
    from datetime import datetime

    def ts(value: str) -> float:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").timestamp()

    rows: list[dict[str, Any]] = []
    for page in range(1, 1000):
        body = httpx.get(
            f"{svc.emulator}/api/v1/tasks",
            params={"page_no": page, "page_size": 100},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=60,
        ).json()
        rows += body["tasks"]
        if len(rows) >= body["total"] or not body["tasks"]:
            break
    done = [
        r
        for r in rows
        if r.get("end_time") and r.get("scheduled_time") and ts(r["submit_time"]) >= since
    ]
    if not done:
        return {"span_s": 0.0, "wait_s": 0.0, "run_s": 0.0}
    first = min(ts(r["submit_time"]) for r in done)
    runs = [(ts(r["scheduled_time"]), ts(r["end_time"])) for r in done]
    return {
        "start_s": first - since,
        "span_s": max(end for _, end in runs) - first,
        "wait_s": sum(ts(r["scheduled_time"]) - ts(r["submit_time"]) for r in done) / len(done),
        "run_s": sum(end - start for start, end in runs) / len(done),
        **idle_slots(runs, first, slots),
    }


def idle_slots(runs: list[tuple[float, float]], first: float, slots: int) -> dict[str, float]:
    """Slot-seconds the emulator's ``slots`` stood idle between the first submission and the
    last end: before all were first busy (head), after the last task started (tail), and
    in between (middle), each divided by ``slots`` (seconds of the whole emulator idle)."""
    events = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    last_start = max(start for start, _ in runs)
    idle = {"head_s": 0.0, "middle_s": 0.0, "tail_s": 0.0}
    running, at, full = 0, first, False
    for t, step in events:
        part = "tail_s" if at >= last_start else ("middle_s" if full else "head_s")
        idle[part] += (slots - running) * (t - at) / slots
        running += step
        full = full or running >= slots
        at = t
    return idle


def measure(svc: Services, spec: RunSpec, media: Media, timeout_s: float) -> RunResult:
    with svc.emulating(spec.latency_s, spec.slots):
        return _measure(svc, spec, media, timeout_s)


def _measure(svc: Services, spec: RunSpec, media: Media, timeout_s: float) -> RunResult:
    run = Run(svc, spec)
    run.start()
    try:
        # Warm up: every pool child builds its context (ledger, Redis, S3 and HTTP clients)
        # on its first task; that one-off cost is not per item.
        warm = seed_prepared(svc, 3 * spec.nodes * spec.concurrency, media)
        wait_until(
            lambda: _finished(svc, warm, 3 * spec.nodes * spec.concurrency),
            timeout_s,
            "warm-up",
            every_s=0.5,
        )
        idle0, idle_t0 = cpu_s(run.worker_pids()), time.monotonic()
        time.sleep(IDLE_SAMPLE_S)
        idle = (cpu_s(run.worker_pids()) - idle0) / (time.monotonic() - idle_t0)
        stats0 = httpx.get(f"{svc.emulator}/_emulator/stats").json()
        cpu0 = cpu_s(run.worker_pids())
        beat0 = cpu_s([run.beat.popen.pid]) if run.beat else 0.0
        redis0, pg0 = service_cpu(svc)
        spies = _profile(run)
        t0 = time.time()
        batch = seed_prepared(svc, spec.n, media, marked_s=600.0 if spec.handoff else None)
        if spec.handoff:
            hand_off_submits(svc, batch)
        wait_until(
            lambda: _finished(svc, batch, spec.n),
            timeout_s,
            f"{spec.label}: {spec.n} items",
            every_s=0.5,
            on_timeout=lambda: str(ledger_counts(svc, batch)),
        )
        if ledger_counts(svc, batch) != {"SUCCEEDED": spec.n}:
            raise RuntimeError(f"{spec.label}: {ledger_counts(svc, batch)}")
        _, last = finish_times(svc, batch)
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(60)
        cpu1 = cpu_s(run.worker_pids())
        beat1 = cpu_s([run.beat.popen.pid]) if run.beat else 0.0
        redis1, pg1 = service_cpu(svc)
        stats1 = httpx.get(f"{svc.emulator}/_emulator/stats").json()
        return RunResult(
            spec,
            last - t0,
            emulator_times(svc, t0, spec.slots),
            cpu1 - cpu0,
            beat1 - beat0,
            redis1 - redis0,
            pg1 - pg0,
            polls=stats1["requests"] - stats0["requests"],
            idle_cpu_per_s=idle,
        )
    finally:
        run.stop()


def _profile(run: Run) -> list[subprocess.Popen[bytes]]:
    """BENCH_PYSPY=DIR: sample each node (main process and pool children) with py-spy over
    the measured batch, raw collapsed stacks in DIR. py-spy's own CPU is not counted."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return []
    stamp = f"{time.time():.0f}"
    return [
        subprocess.Popen(
            [
                *(
                    str(BIN / "py-spy"),
                    "record",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "--subprocesses",
                    *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []),
                ),
                *("-p", str(node.popen.pid), "-o", f"{out}/{run.spec.pool}-{node.name}-{stamp}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for node in run.nodes
    ]


# --- the three parts ------------------------------------------------------------------------


def part_a(
    svc: Services, media: Media, n: int, latency: float, slots: int, only_production: bool = False
) -> None:
    ideal = math.ceil(n / slots) * latency
    specs = [
        RunSpec(
            "production polls (2 s, doubling to 60 s), cap 2C",
            n,
            latency,
            slots,
            2 * slots,
            2.0,
            60.0,
        ),
        RunSpec(
            "short polls (first L, then 0.25 s), cap C", n, latency, slots, slots, latency, 0.25
        ),
        RunSpec(
            "short polls (first L, then 0.25 s), cap 2C",
            n,
            latency,
            slots,
            2 * slots,
            latency,
            0.25,
        ),
    ]
    if only_production:
        specs = specs[:1]
    print(
        f"\n(a) makespan: N={n} single-file tasks, emulator latency L={latency:g} s, "
        f"C={slots} slots; ideal ceil(N/C)·L = {ideal:.1f} s; 2 nodes x -c 4"
    )
    print(
        f"{'settings':<50} {'makespan':>8} {'ratio':>5} {'items/s':>7} {'req/item':>8} "
        f"{'emu span':>8} {'emu wait':>8} {'emu run':>7}"
    )
    for spec in specs:
        r = measure(svc, spec, media, timeout_s=ideal * 6 + 120)
        e = r.emulator
        print(
            f"{spec.label:<50} {r.makespan_s:>8.1f} {r.makespan_s / ideal:>5.2f} "
            f"{n / r.makespan_s:>7.1f} {r.polls / n:>8.1f} {e['span_s']:>8.1f} "
            f"{e['wait_s']:>8.2f} {e['run_s']:>7.2f}",
            flush=True,
        )
        # Where the makespan's excess over the ideal went, in seconds of the whole run.
        after = r.makespan_s - e["start_s"] - e["span_s"]
        print(
            f"{'':<4}seeded -> first submission {e['start_s']:.1f} s; emulator idle "
            f"{e['head_s']:.1f} s filling up, {e['middle_s']:.1f} s in the middle, "
            f"{e['tail_s']:.1f} s draining (tail runs included); last task end -> "
            f"last item done {after:.1f} s",
            flush=True,
        )


def part_b(
    svc: Services,
    media: Media,
    n: int,
    repeat: int = 1,
    pools: tuple[str, ...] = ("prefork", "threads"),
    batch_size: int = 1,
    handoff: bool = False,
    cap: int | None = None,
) -> None:
    # Enough slots that tasks do not queue at the emulator, and a first poll late enough
    # that it finds the task done (the emulator itself fetches and probes every file, a few
    # per second on 2 busy cores): this measures an item's own cost, not repeated polling.
    totals: list[tuple[str, float]] = []
    for pool in pools * repeat:
        # The production sweep interval (30 s): at 1 s, as in (a), the ledger scans beat
        # asks of a worker would be charged to the items.
        spec = RunSpec(
            "overhead",
            n,
            0.0,
            1000,
            cap or 2 * n,
            # At a cap, the items go through in rounds: a first poll at 10 s keeps them short.
            10.0 if cap else 45.0,
            10.0,
            pool=pool,
            sweep_s=30.0,
            batch_size=batch_size,
            handoff=handoff,
        )
        r = measure(svc, spec, media, timeout_s=600)
        e = r.emulator
        print(
            f"\n(b) CPU per item: N={n}, {batch_size} file(s) per provider task, "
            f"submits {'one message each (--handoff)' if handoff else 'sent by the sweeper'}, "
            f"in-flight cap {cap or 2 * n}, "
            "emulator "
            f"latency 0, 2 nodes x -c 4 -P {pool} "
            f"(makespan {r.makespan_s:.1f} s, {r.polls / n:.1f} provider requests per item; "
            f"emulator: {e['wait_s']:.2f} s waiting for a slot, {e['run_s']:.2f} s running "
            f"per task)"
        )
        idle = r.idle_cpu_per_s * r.makespan_s
        print(f"{'process':<44} {'CPU s':>8} {'ms/item':>8}")
        rows = (
            ("workers (our code: tasks, ledger, broker I/O)", r.worker_cpu_s),
            (f"  of which idle ({1000 * r.idle_cpu_per_s:.0f} ms/s: heartbeats, polls)", idle),
            ("  of which items", r.worker_cpu_s - idle),
            ("beat", r.beat_cpu_s),
            ("redis-server (broker)", r.redis_cpu_s),
            ("PostgreSQL backends (ledger)", r.pg_cpu_s),
        )
        for name, seconds in rows:
            print(f"{name:<44} {seconds:>8.2f} {1000 * seconds / n:>8.2f}")
        items_s = r.worker_cpu_s - idle + r.beat_cpu_s + r.redis_cpu_s + r.pg_cpu_s
        print(f"{'total per item, idle excluded':<44} {items_s:>8.2f} {1000 * items_s / n:>8.2f}")
        totals.append((pool, 1000 * items_s / n))
    own = part_steps(svc, media, n, batch_size)
    # What is left once an item's own work (the provider's HTTP, rendering and writing its
    # outputs, presigning, the step logic) is taken out is the machinery: ledger and broker.
    print(
        "\n(b''') ledger and broker CPU per item (target < 10 ms): each run's total minus "
        f"the item's own work measured in (b''), {own:.2f} ms"
    )
    print(f"{'pool':<10} {'total':>8} {'ledger+broker':>14}")
    for pool, total in totals:
        print(f"{pool:<10} {total:>8.2f} {total - own:>14.2f}")
    for pool in dict.fromkeys(p for p, _ in totals):
        mine = sorted(t - own for p, t in totals if p == pool)
        print(
            f"{pool} median {mine[len(mine) // 2]:.2f} ms (min {mine[0]:.2f}, "
            f"max {mine[-1]:.2f}, {len(mine)} runs)"
        )


OWN_WORK = (
    "provider HTTP (httpx + JSON)",
    "outputs (render + write 4 formats)",
    "storage (presigned URL)",
)


def part_steps(svc: Services, media: Media, n: int, batch_size: int = 1) -> float:
    """(b') and (b''); returns the ms per item of the item's own work (not ledger/broker)."""
    with svc.emulating(0.0, 1000):
        _reset(svc)
        steps = steps_in_process(svc, media, min(n, 200), batch_size)
    print(
        f"\n(b') the same steps in one process, no Celery ({min(n, 200)} items, "
        f"{batch_size} per provider task, main-thread CPU)"
    )
    print(f"{'step':<44} {'ms/item':>8} {'SQL/item':>8}")
    for name, ms, statements in steps:
        print(f"{name:<44} {ms:>8.2f} {statements:>8.1f}")
    total = sum(x[1] for x in steps)
    print(f"{'total':<44} {total:>8.2f} {sum(x[2] for x in steps):>8.1f}")
    print("\n(b'') where that CPU goes: outer calls by part, main thread, ms per item")
    for part, ms in sorted(PARTS_SPENT.items(), key=lambda kv: -kv[1]):
        print(f"{part:<44} {ms:>8.2f}")
    rest = total - sum(PARTS_SPENT.values())
    print(f"{'steps themselves (decisions, logging)':<44} {rest:>8.2f}")
    return rest + sum(PARTS_SPENT.get(k, 0.0) for k in OWN_WORK)


def steps_in_process(
    svc: Services, media: Media, n: int, batch_size: int = 1
) -> list[tuple[str, float, float]]:
    """The same steps called in this process's main thread (no Celery around them): CPU ms
    and SQL statements per item for each, to show where a worker's time goes."""
    from sqlalchemy import event

    from pipeline.settings import load_settings
    from pipeline.stages.poll import poll_tasks
    from pipeline.stages.submit import submit_groups
    from workers.app import app, configure
    from workers.context import build_worker_context
    from workers.dispatch import after_submit, dispatch_after

    saved = dict(os.environ)
    os.environ.update(
        svc.env(BULKSCRIBE_POLL__FIRST_S="0.01", BULKSCRIBE_PROVIDER__MAX_INFLIGHT_TASKS=str(4 * n))
    )
    try:
        settings = load_settings()
        configure(app, settings)
        wctx = build_worker_context(settings)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    counts = {"statements": 0}

    def count(*_: Any) -> None:
        counts["statements"] += 1

    event.listen(wctx.ledger.engine, "before_cursor_execute", count)
    spent = _account_by_part()
    cost: dict[str, list[float]] = {
        k: [0.0, 0.0]
        for k in (
            "submit step",
            "dispatch after submit",
            "poll step (incl. persist)",
            "dispatch after poll",
        )
    }

    def timed(name: str, fn: Any, *args: Any) -> Any:
        c0, s0 = time.thread_time(), counts["statements"]
        result = fn(*args)
        cost[name][0] += time.thread_time() - c0
        cost[name][1] += counts["statements"] - s0
        return result

    for size, measured in ((8, False), (n, True)):
        if measured:
            cost = {k: [0.0, 0.0] for k in cost}
        batch = seed_prepared(svc, size, media)
        rows = wctx.ledger.list_items(batch)
        # Submitted as the workers submit: packs of up to jobs_per_message provider tasks.
        groups = [rows[at : at + batch_size] for at in range(0, len(rows), batch_size)]
        most = settings.distributed.jobs_per_message
        for at in range(0, len(groups), most):
            pack = groups[at : at + most]
            tasks = timed("submit step", submit_groups, wctx.flow, pack)
            for group, task in zip(pack, tasks, strict=True):
                timed("dispatch after submit", after_submit, wctx, group, task)
        wait_until(
            lambda b=batch: all(
                httpx.get(f"{svc.emulator}/_emulator/stats").json()["statuses"].get(s, 0) == 0
                for s in ("PENDING", "RUNNING")
            ),
            600,
            "the emulator to finish",
            every_s=0.5,
        )
        # Polled as the workers poll: packs of up to jobs_per_message tasks per message.
        task_ids = sorted({str(r.provider_task_id) for r in wctx.ledger.list_items(batch)})
        for at in range(0, len(task_ids), most):
            found = wctx.ledger.by_tasks(task_ids[at : at + most])
            tasks = {
                t: [r for r in rows if r.state.value == "SUBMITTED"] for t, rows in found.items()
            }
            outcomes = timed("poll step (incl. persist)", poll_tasks, wctx.flow, tasks)
            back = [r.id for t, o in outcomes.items() if o.read_back for r in tasks[t]]
            if back:
                timed("dispatch after poll", dispatch_after, wctx, back)  # as workers.tasks.poll
        assert ledger_counts(svc, batch) == {"SUCCEEDED": size}, ledger_counts(svc, batch)
        if not measured:
            spent.clear()
    wctx.ledger.engine.dispose()
    _unwrap()
    PARTS_SPENT.clear()
    PARTS_SPENT.update({k: 1000 * v / n for k, v in spent.items()})
    return [(name, 1000 * c / n, st / n) for name, (c, st) in cost.items()]


PARTS_SPENT: dict[str, float] = {}  # (b'): main-thread CPU ms per item by part
_WRAPPED: list[tuple[Any, str, Any]] = []


def _account_by_part() -> dict[str, float]:
    """Wrap the outer calls of each part (ledger, broker, provider HTTP, outputs, storage,
    Redis limits) to sum their main-thread CPU; nested calls count once, to the outer."""
    from celery import Celery
    from celery.app.task import Task

    from pipeline.asr.dashscope.client import DashScopeClient
    from pipeline.flow.outputs import DirSink, StoreSink
    from pipeline.ledger import Ledger
    from pipeline.stages.upload import PresignPublisher
    from workers.limits import RedisGate, RedisTokenBucket

    spent: dict[str, float] = {}
    depth = [0]
    parts = {
        "ledger (SQLAlchemy + psycopg)": [Ledger],
        "broker publish (Celery apply_async)": [Task, Celery],
        "provider HTTP (httpx + JSON)": [DashScopeClient],
        "outputs (render + write 4 formats)": [DirSink, StoreSink],
        "storage (presigned URL)": [PresignPublisher],
        "Redis limits (gate, rate)": [RedisGate, RedisTokenBucket],
    }
    for part, classes in parts.items():
        for cls in classes:
            # The class's own methods and those it inherits (the Ledger is a facade over
            # its parts' classes): each wrapped on the class itself.
            methods: dict[str, Any] = {}
            for base in reversed(cls.__mro__[:-1]):
                methods.update(vars(base))
            for name, fn in list(methods.items()):
                if (
                    name.startswith("__")
                    or not callable(fn)
                    or isinstance(fn, (type, staticmethod, classmethod))
                ):
                    continue
                if cls is Task and name != "apply_async":
                    continue
                if cls is Celery and name != "send_task":
                    continue

                def wrapper(*a: Any, __fn: Any = fn, __part: str = part, **kw: Any) -> Any:
                    if depth[0]:
                        return __fn(*a, **kw)
                    depth[0] += 1
                    c0 = time.thread_time()
                    try:
                        return __fn(*a, **kw)
                    finally:
                        depth[0] -= 1
                        spent[__part] = spent.get(__part, 0.0) + time.thread_time() - c0

                _WRAPPED.append((cls, name, vars(cls).get(name)))
                setattr(cls, name, wrapper)
    return spent


def _unwrap() -> None:
    for cls, name, fn in reversed(_WRAPPED):
        if fn is None:  # inherited: the base class's method shows through again
            delattr(cls, name)
        else:
            setattr(cls, name, fn)
    _WRAPPED.clear()


def part_c(svc: Services, media: Media, n: int, sample_s: float, first_poll_s: float) -> None:
    # Few slots and an hour's latency: the tasks stay PENDING/RUNNING at the emulator and
    # the items SUBMITTED in our ledger. With the first poll beyond dispatch's 60 s countdown
    # horizon, a waiting item costs the workers nothing: its next poll lives in the ledger
    # (next_run_at), not in a message. With --first-poll-s under 60, every waiting item's
    # next poll is an ETA message a worker holds in memory (see the report's RSS growth).
    spec = RunSpec("in flight", n, 3600.0, 8, n + 100, first_poll_s, 60.0)
    with svc.emulating(spec.latency_s, spec.slots):
        _part_c(svc, spec, media, sample_s)


def _part_c(svc: Services, spec: RunSpec, media: Media, sample_s: float) -> None:
    n = spec.n
    run = Run(svc, spec, BULKSCRIBE_DISTRIBUTED__REDISPATCH_S="600")
    run.start()

    def rss() -> list[float]:
        return [sum(rss_mb(p) for p in group_pids(node.popen.pid)) for node in run.nodes]

    def procs_rss() -> list[list[float]]:  # per node: main process first, then children
        return [[rss_mb(p) for p in sorted(group_pids(node.popen.pid))] for node in run.nodes]

    series: list[tuple[str, float, list[float]]] = []
    samples: list[list[float]] = []
    try:
        # Warm-up: every pool child builds its context (clients, pools) on its first task;
        # the baseline is taken once a few dozen items are submitted and waiting.
        warm_n = 3 * spec.nodes * spec.concurrency
        warm = seed_prepared(svc, warm_n, media)
        wait_until(
            lambda: ledger_counts(svc, warm).get("SUBMITTED", 0) == warm_n,
            300,
            "warm-up",
            every_s=0.5,
        )
        time.sleep(2.0)
        series.append(("warmed up, before the batch", 0.0, rss()))
        per_proc = [procs_rss()]
        batch = seed_prepared(svc, n, media)
        t0 = time.monotonic()
        submitted_at = None
        marks = [n // 4, n // 2, 3 * n // 4]
        while True:
            now = rss()
            samples.append(now)
            counts = ledger_counts(svc, batch)
            sent = counts.get("SUBMITTED", 0)
            while marks and sent >= marks[0]:
                series.append((f"{marks.pop(0)} submitted", time.monotonic() - t0, now))
            if submitted_at is None and sent >= n:
                submitted_at = time.monotonic()
                series.append((f"all {n} submitted", submitted_at - t0, now))
            if submitted_at is not None and time.monotonic() - submitted_at >= sample_s:
                series.append((f"+{sample_s:.0f} s waiting", time.monotonic() - t0, now))
                per_proc.append(procs_rss())
                break
            if time.monotonic() - t0 > 1800:
                raise TimeoutError(f"in flight: still {counts} after 30 min")
            time.sleep(1.0)
        counts = ledger_counts(svc, batch)
    finally:
        run.stop()
    assert submitted_at is not None
    print(
        f"\n(c) {n} items in flight (one task each, first poll {spec.poll_first_s:g} s after "
        f"submission): all SUBMITTED {submitted_at - t0:.0f} s after seeding; sampled "
        f"{len(samples)} times until {sample_s:.0f} s later; ledger {counts}"
    )
    print(
        f"{'moment':<34} {'t s':>6} "
        + " ".join(f"{'node ' + str(i) + ' MB':>10}" for i in range(len(run.nodes)))
    )
    for label, at, values in series:
        print(f"{label:<34} {at:>6.0f} " + " ".join(f"{v:>10.1f}" for v in values))
    for i in range(len(run.nodes)):
        col = [s[i] for s in samples]
        print(
            f"node {i} (main + {spec.concurrency} children): min {min(col):.1f} MB, "
            f"max {max(col):.1f} MB over the batch; per process (main first) before -> "
            f"after: "
            + ", ".join(
                f"{a:.0f}->{b:.0f}" for a, b in zip(per_proc[0][i], per_proc[1][i], strict=False)
            )
            + " MB"
        )


def main() -> None:
    from pipeline.log import configure_logging

    configure_logging(level="warning")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="items for the makespan run")
    parser.add_argument("--latency", type=float, default=2.0, help="emulator latency L (s)")
    parser.add_argument("--slots", type=int, default=20, help="emulator concurrency C")
    parser.add_argument("--overhead-n", type=int, default=500)
    parser.add_argument("--inflight-n", type=int, default=10_000)
    parser.add_argument(
        "--sample-s",
        type=float,
        default=60.0,
        help="how long (c) keeps sampling once all are submitted",
    )
    parser.add_argument(
        "--first-poll-s",
        type=float,
        default=900.0,
        help="(c): first poll this long after submission",
    )
    parser.add_argument("--parts", default="abc")
    parser.add_argument("--repeat", type=int, default=1, help="(b): runs per pool")
    parser.add_argument(
        "--pools", default="prefork,threads", help="(b): worker pools, comma-separated"
    )
    parser.add_argument(
        "--handoff",
        action="store_true",
        help="(b): one submit message per item, as prepare steps send them",
    )
    parser.add_argument(
        "--cap",
        type=int,
        default=None,
        help="(b): provider tasks in flight at most (default 2N: never reached)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="(b): files per Fun-ASR task (the shipped default groups 10)",
    )
    args = parser.parse_args()
    keep = os.environ.get("BENCH_KEEP_DIR")  # keep the worker logs there
    with (
        (
            contextlib.nullcontext(keep)
            if keep
            else tempfile.TemporaryDirectory(prefix="bulkscribe-dbench-")
        ) as tmp,
        services(Path(tmp)) as svc,
    ):
        media = shared_media(svc)
        print(
            f"distributed bench: {os.cpu_count()} cores; redis-server :{svc.redis.port}, "
            f"moto {svc.moto}, database {svc.pg_name}"
        )
        if "a" in args.parts:
            part_a(svc, media, args.n, args.latency, args.slots, "p" in args.parts)
        if "b" in args.parts:
            part_b(
                svc,
                media,
                args.overhead_n,
                args.repeat,
                tuple(args.pools.split(",")),
                args.batch_size,
                args.handoff,
                args.cap,
            )
        elif "s" in args.parts:  # only (b') and (b''): the steps in one process, quick
            part_steps(svc, media, args.overhead_n, args.batch_size)
        if "c" in args.parts:
            part_c(svc, media, args.inflight_n, args.sample_s, args.first_poll_s)


if __name__ == "__main__":
    main()
