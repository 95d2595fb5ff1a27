"""gc: finished batches lose their item and attempt rows and keep their totals; batches
not finished are refused."""

from __future__ import annotations

import subprocess

import pytest
from scale_support import BIN, bulkscribe, sql
from support import walk

from pipeline.ledger import Failure, ItemSeed, open_ledger
from pipeline.states import ItemState as S

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _batch(ledger, batch_id: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    ledger.ensure_batch(
        batch_id, kind="submit", out=f"/tmp/{batch_id}", engine="local", model="tiny.en"
    )
    seeds = [
        ItemSeed(key=f"k{i}", line_no=i + 1, source=f"/d/{i}.wav", spec={}, fingerprint=str(i))
        for i in range(n)
    ]
    ledger.sync_items(batch_id, seeds, engine="local", model="tiny.en")
    return [r.id for r in ledger.list_items(batch_id)]


def test_gc_keeps_totals_and_refuses_unfinished(pg_url: str, env: dict[str, str]) -> None:
    ledger = open_ledger(pg_url)
    done = _batch(ledger, "done", 5)
    for i, item in enumerate(done):
        if i < 3:
            walk(ledger, item, S.SUCCEEDED, audio_duration_ms=1500)
        else:
            ledger.fail(item, S.PENDING, Failure.permanent("not_found", "gone"))
    ledger.mark_batch_done("done")
    _batch(ledger, "open", 2)

    dry = bulkscribe(env, "gc", "--finished-before", "2999-01-01", "--dry-run")
    assert dry["refused"] == ["open"]
    assert [(c["batch_id"], c["items"]) for c in dry["collected"]] == [("done", 5)]
    assert sql(pg_url, "SELECT count(*) FROM items") == [(7,)]

    early = bulkscribe(env, "gc", "--finished-before", "2000-01-01")
    assert early == {"dry_run": False, "collected": [], "refused": []}

    out = bulkscribe(env, "gc", "--finished-before", "2999-01-01")
    assert out["collected"][0] == {
        "batch_id": "done",
        "items": 5,
        "total": 5,
        "audio_s": 4.5,
        "counts": {"SUCCEEDED": 3, "FAILED": 2},
    }
    assert sql(pg_url, "SELECT batch_id, count(*) FROM items GROUP BY 1") == [("open", 2)]
    assert sql(pg_url, "SELECT count(*) FROM attempts") == [(2,)]
    status = bulkscribe(env, "status", "done")
    assert (status["total"], status["counts"], status["collected"], status["audio_s"]) == (
        5,
        {"SUCCEEDED": 3, "FAILED": 2},
        True,
        4.5,
    )
    again = bulkscribe(env, "gc", "--finished-before", "2999-01-01")
    assert again["collected"] == [] and again["refused"] == ["open"]
    bad = subprocess.run(
        [str(BIN / "bulkscribe"), "gc", "--finished-before", "soon"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "use a date" in bad.stderr
