"""Budgets end to end: `bulkscribe run --max-audio-hours/--max-cost` with the real CLI,
real ffmpeg and the real model, then re-runs with a higher cap and without one."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e import ffmpeg, read_results, write_jsonl

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]

Cli = Callable[..., subprocess.CompletedProcess[str]]
# Manifest order, not sorted: cumulative 3, 4, 8, 10, 15 s.
DURATIONS = {"l1": 3.0, "l2": 1.0, "l3": 4.0, "l4": 2.0, "l5": 5.0}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("budget")
    rows: list[dict[str, Any] | str] = []
    for n, (key, seconds) in enumerate(DURATIONS.items()):
        wav = d / f"{key}.wav"
        ffmpeg(
            [
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency={300 + 100 * n}:duration={seconds}",
                "-ar",
                "16000",
                "-ac",
                "1",
                str(wav),
            ]
        )
        rows.append({"id": key, "source": str(wav)})
    return write_jsonl(d / "five.jsonl", rows)


def statuses(out: Path) -> dict[str, str]:
    return {r["id"]: r["status"] for r in read_results(out)}


def run(
    bulkscribe: Cli, manifest: Path, out: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    done = bulkscribe("run", str(manifest), "--out", str(out), "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_audio_cap_admits_the_manifest_prefix_and_a_higher_cap_the_rest(
    bulkscribe: Cli, manifest: Path, tmp_path: Path
) -> None:
    """A 9 s cap (0.0025 h) admits lines 1-3 (8 s); line 4 would make 10 s, so lines 4 and 5
    are SKIPPED with budget_exceeded even though line 4 alone is short. A re-run with a
    10.8 s cap carries on from the running total and admits line 4; one without a cap, the
    rest. SKIPPED is not a failure: every run exits 0."""
    out = tmp_path / "out"
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    summary = run(bulkscribe, manifest, out, "--max-audio-hours", "0.0025", env=env)
    assert statuses(out) == {
        "l1": "SUCCEEDED",
        "l2": "SUCCEEDED",
        "l3": "SUCCEEDED",
        "l4": "SKIPPED",
        "l5": "SKIPPED",
    }
    assert summary["counts"] == {"SUCCEEDED": 3, "SKIPPED": 2}
    skipped = [r for r in read_results(out) if r["status"] == "SKIPPED"]
    assert {r["error"]["code"] for r in skipped} == {"budget_exceeded"}
    assert "8.0 s" in skipped[0]["error"]["message"]
    assert not (out / "l4.json").exists() and not (out / "l5.json").exists()
    assert (
        sum(r["audio_duration_ms"] or 0 for r in read_results(out) if r["status"] == "SUCCEEDED")
        == 8000
    )

    run(bulkscribe, manifest, out, "--max-audio-hours", "0.003", env=env)
    assert statuses(out) == {
        "l1": "SUCCEEDED",
        "l2": "SUCCEEDED",
        "l3": "SUCCEEDED",
        "l4": "SUCCEEDED",
        "l5": "SKIPPED",
    }
    run(bulkscribe, manifest, out, env=env)
    assert set(statuses(out).values()) == {"SUCCEEDED"}
    assert (out / "l5.json").is_file()


def test_cost_cap_uses_the_price_table_and_needs_a_price(
    bulkscribe: Cli, manifest: Path, tmp_path: Path
) -> None:
    """At 1 USD per audio second (a [prices] row for the model), --max-cost 4.5 admits lines
    1-2 (4 USD). Without a price for the model, --max-cost is a usage error (exit 2) and
    nothing is written."""
    out = tmp_path / "out"
    prices = {
        "BULKSCRIBE_PRICES": json.dumps({"tiny.en": {"per_second": 1.0, "currency": "USD"}}),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    run(bulkscribe, manifest, out, "--max-cost", "4.5", env=prices)
    assert statuses(out) == {
        "l1": "SUCCEEDED",
        "l2": "SUCCEEDED",
        "l3": "SKIPPED",
        "l4": "SKIPPED",
        "l5": "SKIPPED",
    }
    message = read_results(out)[2]["error"]["message"]
    assert "max_cost 4.5 USD" in message
    refused = tmp_path / "refused"
    done = bulkscribe(
        "run",
        str(manifest),
        "--out",
        str(refused),
        "--engine",
        "dashscope",
        "--model",
        "fun-asr",
        "--max-cost",
        "1",
        env={"DASHSCOPE_API_KEY": "sk-anything"},  # the key is checked first
    )
    assert done.returncode == 2
    assert "--max-cost needs a price for fun-asr" in done.stderr
    assert not refused.exists()
