"""Streaming intake into a SQLite ledger: chunks, repeated ids named as load_inputs names
them, and a second intake of the same INPUTs keeping what is there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import scratch_database

from pipeline.inputs.intake import enter_stream
from pipeline.inputs.manifest import InputStream, load_inputs
from pipeline.ledger import open_ledger, sqlite_url
from pipeline.models import ManifestProblem


def _manifest(path: Path, ids: list[str]) -> str:
    path.write_text("".join(json.dumps({"id": i, "source": f"/d/{i}.wav"}) + "\n" for i in ids))
    return str(path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite stages every chunk; PostgreSQL COPYs the chunks of a new batch straight into
    its tables until one repeats an id, and stages that one and the rest."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "ledger.db")
        return
    with scratch_database("bulkscribe_intake") as url:
        yield url


def test_intake_in_chunks_names_repeats_and_resumes(tmp_path: Path, ledger_url: str) -> None:
    """Two manifests, an id repeated within a chunk, across chunks and across files: each
    repeat fails as load_inputs would fail it, and entering again adds nothing."""
    a = _manifest(tmp_path / "a.jsonl", [f"x{i}" for i in range(7)] + ["x1"])
    b = _manifest(tmp_path / "b.jsonl", ["y0", "x5", "y1"])
    ledger = open_ledger(ledger_url)
    ledger.ensure_batch(
        "b1", kind="submit", out=str(tmp_path / "out"), engine="local", model="tiny.en"
    )
    chunks: list[int] = []
    report = enter_stream(
        ledger,
        "b1",
        InputStream([a, b]),
        engine="local",
        model="tiny.en",
        language=None,
        chunk=3,
        on_chunk=lambda ids: chunks.append(len(ids)),
    )
    assert (report.total, report.created, report.kept, report.duplicates) == (11, 11, 0, 2)
    assert sum(chunks) == 9  # the PENDING items, handed over chunk by chunk
    expected = {
        e.line_no: e.message for e in load_inputs([a, b]).entries if isinstance(e, ManifestProblem)
    }
    rows = ledger.list_items("b1")
    failed = {r.line_no: r.error_message for r in rows if r.error_code == "duplicate_id"}
    assert (
        failed
        == expected
        == {
            8: "a.jsonl line 8: id 'x1' is already used on a.jsonl line 2",
            10: "b.jsonl line 2: id 'x5' is already used on a.jsonl line 6",
        }
    )
    assert len(ledger.attempts_of(rows[0].id)) == 1
    # The same rows whichever way a chunk went in: the first two chunks by COPY on
    # PostgreSQL (x0-x2, x3-x5), the third (x6, x1 again) and the rest staged.
    for row in rows:
        (attempt,) = ledger.attempts_of(row.id)
        if row.error_code:
            assert row.state.value == attempt["state"] == "FAILED"
            assert row.error_retryable is False and row.finished_at is not None
            assert attempt["finished_at"] is not None
        else:
            assert row.state.value == "PENDING" and attempt["state"] == "RUNNING"
            assert row.error_retryable is None and row.finished_at is None
            assert attempt["finished_at"] is None
        assert (row.attempt, row.tries, row.polls, attempt["model"]) == (1, 0, 0, "tiny.en")
    assert [r.key for r in rows if not r.error_code] == [f"x{i}" for i in range(7)] + ["y0", "y1"]
    assert ledger.batch("b1")["intake_at"] is None  # type: ignore[index]

    again = enter_stream(
        ledger, "b1", InputStream([a, b]), engine="local", model="tiny.en", language=None, chunk=4
    )
    assert (again.created, again.kept) == (0, 11)
    assert len(ledger.list_items("b1")) == 11


def test_chunk_ids_sort_in_the_order_they_are_made() -> None:
    """Ids of a later chunk sort after an earlier chunk's, and within a chunk in line order
    (each chunk then lands at the right-hand edge of every index keyed by item id); all
    distinct, 32 hex digits like the UUIDs of the rows entered before them."""
    import time

    from pipeline.ledger.bulk import chunk_ids

    first = chunk_ids(5000)
    time.sleep(0.002)
    second = chunk_ids(3)
    made = first + second
    assert sorted(made) == made and len(set(made)) == len(made)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    with pytest.raises(ValueError):
        chunk_ids(0x100001)


def test_values_with_copy_control_characters_arrive_as_written(
    tmp_path: Path, ledger_url: str
) -> None:
    """Tabs, newlines, carriage returns, backslashes and a lone ``\\.`` (COPY's old end of
    data) in a source and in an option reach the ledger unchanged, by COPY (the first
    chunk on PostgreSQL) and staged (the chunks after a repeated id) alike."""
    hostile = ["a\tb", "c\nd", "e\r\nf", "g\\h", "\\.", "\\N", "ü\\\\t"]
    lines = [{"id": f"h{i}", "source": f"/d/{v}.wav", "note": v} for i, v in enumerate(hostile)]
    lines.insert(2, {"id": "h0", "source": "/d/again.wav"})  # chunk 2 repeats an id: staged
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = open_ledger(ledger_url)
    ledger.ensure_batch("b1", kind="submit", out=str(tmp_path / "out"), engine="local", model="m")
    enter_stream(
        ledger, "b1", InputStream([str(path)]), engine="local", model="m", language=None, chunk=2
    )
    rows = {r.key: r for r in ledger.list_items("b1") if not r.error_code}
    assert [rows[f"h{i}"].source for i in range(len(hostile))] == [f"/d/{v}.wav" for v in hostile]
    for i, value in enumerate(hostile):
        (attempt,) = ledger.attempts_of(rows[f"h{i}"].id)
        assert attempt["options"] == {"note": value}
        assert rows[f"h{i}"].spec["options"] == {"note": value}
