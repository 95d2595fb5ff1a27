"""Operator and scheduled work: reprocessing with another model, nightly runs over a bucket."""

from __future__ import annotations

import collections
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dist_support import (
    ARCHIVE_BUCKET,
    Clips,
    Cluster,
    distinct_entries,
)
from support import s3_client, wait_until

pytestmark = [
    pytest.mark.celery,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.slow,
]

CRON = "30 2 * * 1-5"


def test_reprocess_with_another_model(cluster: Cluster, clips: Clips) -> None:
    """A finished Fun-ASR batch reprocessed with qwen3-asr-flash-filetrans: a second attempt
    per item with the new model, every item succeeds again, and the outputs are rewritten."""
    cluster.worker(concurrency=2)
    cluster.beat()
    batch = cluster.submit(
        distinct_entries(clips, 4, prefix="re"), "--engine", "dashscope", "--model", "fun-asr"
    )
    first = cluster.wait_done(batch, timeout_s=90)
    assert {r.state.value for r in first} == {"SUCCEEDED"}
    out = cluster.out_dir(batch)
    stamps = {r.key: (out / f"{r.key}.json").stat().st_mtime_ns for r in first}
    results_stamp = (out / "results.jsonl").stat().st_mtime_ns

    done = cluster.cli_json("reprocess", batch, "--model", "qwen3-asr-flash-filetrans")
    assert done["reprocessed"] == 4
    rows = cluster.wait_done(batch, timeout_s=90)

    assert {r.state.value for r in rows} == {"SUCCEEDED"}
    for row in rows:
        attempts = cluster.ledger.attempts_of(row.id)
        assert [(a["number"], a["model"], a["state"]) for a in attempts] == [
            (1, "fun-asr", "SUCCEEDED"),
            (2, "qwen3-asr-flash-filetrans", "SUCCEEDED"),
        ]
        assert attempts[1]["provider_task_id"] == row.provider_task_id
        assert row.attempt == 2 and row.spec["model"] == "qwen3-asr-flash-filetrans"
        assert (out / f"{row.key}.json").stat().st_mtime_ns > stamps[row.key]
        assert json.loads((out / f"{row.key}.json").read_text())["transcripts"]
    assert (out / "results.jsonl").stat().st_mtime_ns > results_stamp
    status = cluster.cli_json("status", batch)  # the model in use now, not the submitted one
    assert (status["model"], status["models"], status["state"]) == (
        "qwen3-asr-flash-filetrans",
        [{"engine": "dashscope", "model": "qwen3-asr-flash-filetrans", "items": 4}],
        "done",
    )
    assert "dashscope/qwen3-asr-flash-filetrans" in cluster.cli("status", batch).stdout
    # Once per file and attempt: four files in Fun-ASR tasks, then one filetrans task each.
    per_model = collections.Counter(
        (t["model"], urlsplit(u).path) for t in cluster.em_tasks() for u in t["file_urls"]
    )
    assert sorted(set(per_model.values())) == [1]
    models = collections.Counter(model for model, _ in per_model)
    assert models == {"fun-asr": 4, "qwen3-asr-flash-filetrans": 4}


def _schedule_toml(tmp: Path, out: str) -> Path:
    path = tmp / "nightly.toml"
    path.write_text(f"""
[[distributed.schedules]]
name = "nightly"
cron = "{CRON}"
source = "s3://{ARCHIVE_BUCKET}/incoming/"
out = "{out}"
engine = "dashscope"
model = "fun-asr"
""")
    return path


def test_nightly_run_finds_only_new_files(
    cluster: Cluster, clips: Clips, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled run batches every file under the prefix, the next one only the two added
    since, and one with nothing new makes no batch at all."""
    from pipeline.settings import load_settings
    from workers.context import build_worker_context
    from workers.schedules import start_scheduled_run

    out = f"s3://{ARCHIVE_BUCKET}/transcripts/nightly"
    config = _schedule_toml(tmp_path, out)
    cluster.env["BULKSCRIBE_CONFIG"] = str(config)
    s3 = s3_client(cluster.moto)
    for i in range(3):
        s3.upload_file(str(clips.files[i]), ARCHIVE_BUCKET, f"incoming/night{i}.wav")
    s3.put_object(Bucket=ARCHIVE_BUCKET, Key="incoming/notes.txt", Body=b"not media")
    worker = cluster.worker(concurrency=2)
    cluster.beat()
    # The test process fires the run itself, as beat's task would, with a clock of its own.
    for key, value in cluster.env.items():
        if key.startswith(("BULKSCRIBE_", "AWS_", "DASHSCOPE_")):
            monkeypatch.setenv(key, value)
    wctx = build_worker_context(load_settings(config))
    night = datetime(2026, 1, 5, 2, 30, tzinfo=UTC)

    first = start_scheduled_run(wctx, "nightly", now=night)
    assert first == "sched-nightly-20260105-0230"
    rows = cluster.wait_done(first, timeout_s=90)
    assert sorted(r.key for r in rows) == ["night0", "night1", "night2"]
    assert {r.state.value for r in rows} == {"SUCCEEDED"}

    for i in (3, 4):
        s3.upload_file(str(clips.files[i]), ARCHIVE_BUCKET, f"incoming/late/night{i}.wav")
    second = start_scheduled_run(wctx, "nightly", now=night + timedelta(days=1))
    assert second == "sched-nightly-20260106-0230"
    rows = cluster.wait_done(second, timeout_s=90)
    assert sorted(r.key for r in rows) == ["late/night3", "late/night4"]  # the tree, mirrored
    assert {r.state.value for r in rows} == {"SUCCEEDED"}

    # Results went where the schedule says: one folder per run under its out prefix.
    for batch, n in ((first, 3), (second, 2)):
        body = s3.get_object(
            Bucket=ARCHIVE_BUCKET, Key=f"transcripts/nightly/{batch}/results.jsonl"
        )["Body"].read()
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert [r["status"] for r in lines] == ["SUCCEEDED"] * n
        for line in lines:
            s3.head_object(
                Bucket=ARCHIVE_BUCKET, Key=f"transcripts/nightly/{batch}/{line['id']}.json"
            )

    # The third run goes through Celery, as beat sends it; nothing is new, so no batch.
    from celery import Celery

    sender = Celery(broker=cluster.env["BULKSCRIBE_BROKER_URL"], set_as_current=False)
    sender.send_task("bulkscribe.scheduled_run", args=("nightly",), queue="provider")
    wait_until(
        lambda: "schedule.nothing_new" in worker.log.read_text(),
        30,
        "the scheduled run to find nothing new",
    )
    assert sorted(cluster.ledger.batch_ids()) == [first, second]


def test_beat_keeps_the_configured_cron_in_redbeat(cluster: Cluster, tmp_path: Path) -> None:
    """`bulkscribe beat` stores each configured schedule in redbeat with its cron, next to
    the sweep."""
    from celery.schedules import crontab

    from pipeline.settings import DistributedSettings, ScheduleSettings
    from workers.schedules import beat_schedule

    sched = ScheduleSettings(name="nightly", cron=CRON, source="s3://a/b/", out="s3://a/c")
    entries = beat_schedule(DistributedSettings(sweep_s=1, schedules=(sched,)))
    assert entries["bulkscribe-schedule-nightly"]["schedule"] == crontab(
        minute="30", hour="2", day_of_month="*", month_of_year="*", day_of_week="1-5"
    )
    assert entries["bulkscribe-schedule-nightly"]["args"] == ("nightly",)

    config = _schedule_toml(tmp_path, "s3://archive/out")
    cluster.env["BULKSCRIBE_CONFIG"] = str(config)
    beat = cluster.beat()
    # Read back what beat stored, through redbeat's own API and our Celery settings.
    from celery import Celery
    from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf

    from pipeline.settings import load_settings
    from workers.app import celery_config

    app = Celery("check", set_as_current=False)
    app.conf.update(celery_config(load_settings(config, broker_url=cluster.redis.url)))
    ensure_conf(app)

    def stored(name: str) -> RedBeatSchedulerEntry | None:
        try:
            return RedBeatSchedulerEntry.from_key(
                RedBeatSchedulerEntry.generate_key(app, name), app=app
            )
        except KeyError:
            return None

    entry = wait_until(
        lambda: stored("bulkscribe-schedule-nightly"),
        30,
        "redbeat to store the schedule",
        on_timeout=beat.tail,
    )
    assert entry.task == "bulkscribe.scheduled_run"
    assert list(entry.args) == ["nightly"]
    assert entry.schedule == crontab(minute="30", hour="2", day_of_week="1-5")
    assert stored("bulkscribe-sweep") is not None
