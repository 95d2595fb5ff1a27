"""Unit tests for pipeline.stages.reconcile.reconcile_submitting over a real SQLite ledger and a
DashScopeClient whose HTTP is an httpx MockTransport: adopt the task found, wait while a
running one might hold the file, submit again when none does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import bare_flow, walk

from pipeline.asr.dashscope import DashScopeClient
from pipeline.ledger import ItemRow, ItemSeed, Ledger, open_ledger, sqlite_url
from pipeline.stages.reconcile import reconcile_submitting
from pipeline.states import ItemState

BASE = "https://dashscope.test/api/v1"


def provider(tasks: dict[str, dict[str, Any]], asked: list[str]) -> Callable[[], DashScopeClient]:
    """A client whose account holds ``tasks`` (id -> E2 output), answering E9 and E2."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/tasks":
            listed = [{"task_id": t, "task_status": o["task_status"]} for t, o in tasks.items()]
            return httpx.Response(200, json={"tasks": listed, "total": len(listed)})
        task_id = path.removeprefix("/tasks/")
        asked.append(task_id)
        return httpx.Response(200, json={"request_id": "r", "output": tasks[task_id]})

    client = DashScopeClient(BASE, "sk-test", httpx.Client(transport=httpx.MockTransport(answer)))
    return lambda: client


def submitting(tmp_path: Path, urls: list[str]) -> tuple[Ledger, list[ItemRow]]:
    """Items cut short while submitting: SUBMITTING with their URLs, lease long gone."""
    ledger = open_ledger(sqlite_url(tmp_path / "l.db"))
    ledger.ensure_batch("b", kind="run", out=str(tmp_path), engine="dashscope", model="fun-asr")
    seeds = [
        ItemSeed(f"k{n}", n, f"/a/{n}.wav", {"engine": "dashscope", "model": "fun-asr"}, "f")
        for n in range(len(urls))
    ]
    ledger.sync_items("b", seeds, engine="dashscope", model="fun-asr")
    rows = []
    for row, url in zip(ledger.list_items("b"), urls, strict=True):
        walk(ledger, row.id, ItemState.PREPARED)
        got = ledger.claim(
            row.id,
            ItemState.PREPARED,
            ItemState.SUBMITTING,
            owner="gone",
            lease_s=-1,
            media_url=url,
        )
        assert got is not None
        rows.append(got)
    return ledger, rows


def done(*urls: str) -> dict[str, Any]:
    results = [
        {"file_url": u, "subtask_status": "SUCCEEDED", "transcription_url": f"{u}.json"}
        for u in urls
    ]
    return {"task_status": "SUCCEEDED", "results": results}


def test_a_found_task_is_adopted_with_its_siblings(tmp_path: Path) -> None:
    """The task holding the URL is adopted for every item it carries, in one go; tasks the
    ledger already knows are not asked about."""
    ledger, rows = submitting(tmp_path, ["oss://a", "oss://b"])
    asked: list[str] = []
    tasks = {"other": done("oss://x"), "ours": done("oss://a", "oss://b")}
    ctx = bare_flow(ledger=ledger, provider=provider(tasks, asked))
    reconcile_submitting(ctx, rows[0])
    after = {r.key: r for r in ledger.list_items("b")}
    assert [(r.state, r.provider_task_id) for r in after.values()] == [
        (ItemState.SUBMITTED, "ours"),
        (ItemState.SUBMITTED, "ours"),
    ]
    assert asked == ["other", "ours"]


@pytest.mark.parametrize(
    ("tasks", "state"),
    [
        ({"running": {"task_status": "RUNNING"}}, ItemState.SUBMITTING),  # waits, unsure
        ({"elsewhere": done("oss://x")}, ItemState.PREPARED),  # absent: submitted again
        ({}, ItemState.PREPARED),
    ],
)
def test_unsure_waits_and_absent_goes_back(
    tmp_path: Path, tasks: dict[str, dict[str, Any]], state: ItemState
) -> None:
    """A running task might hold the file: the item waits (unclaimed, a new lease); with no
    candidate left it goes back to PREPARED with no URL, due at once."""
    ledger, rows = submitting(tmp_path, ["oss://a"])
    ctx = bare_flow(ledger=ledger, provider=provider(tasks, []))
    reconcile_submitting(ctx, rows[0])
    (after,) = ledger.list_items("b")
    assert after.state is state
    if state is ItemState.PREPARED:
        assert after.media_url is None and after.next_run_at is None
    else:
        assert after.lease_owner is None and after.lease_until is not None
