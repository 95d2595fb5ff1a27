"""Budget admission: the pure rule (pipeline.planning.budget) and its compare-and-set ledger side
(pipeline.ledger.budgets) on SQLite and on the real PostgreSQL ledger."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import test_ledger
from test_ledger import BATCH, add

from pipeline.ledger import ItemSeed, Ledger
from pipeline.ledger.budgets import (
    PARKED,
    advance,
    count_parked,
    get_budget,
    is_parked,
    set_caps,
)
from pipeline.planning.budget import Caps, Entry, Tally, admit
from pipeline.states import ItemState

S = ItemState
# test_ledger's fixture, registered here under its own name "ledger": an empty migrated
# ledger on SQLite and on the real PostgreSQL server.
ledger = test_ledger.ledger


def entries(*specs: tuple[ItemState, float | None]) -> list[Entry]:
    return [Entry(f"i{n}", n, state, secs, "m") for n, (state, secs) in enumerate(specs, 1)]


def test_admits_the_prefix_that_fits_and_skips_the_rest() -> None:
    """Cap 65 s over 10, 20, 30, 40, 5: the first three fit (60 s); the fourth would pass the
    cap, so it and everything after it (even the 5 s one that would fit) are skipped."""
    es = entries(*[(S.PREPARED, s) for s in (10, 20, 30, 40, 5)])
    out = admit(Tally(), es, Caps(max_audio_s=65))
    assert out.admit == ("i1", "i2", "i3")
    assert [e.id for e in out.skip] == ["i4", "i5"]
    assert out.tally == Tally(line=3, used_s=60, used_cost=0, skip_from=4)


def test_an_exact_fit_is_admitted() -> None:
    """The cap is inclusive: 30 + 30 under a 60 s cap both go."""
    out = admit(Tally(), entries((S.PREPARED, 30.0), (S.PREPARED, 30.0)), Caps(max_audio_s=60))
    assert out.admit == ("i1", "i2") and out.skip == ()


@pytest.mark.parametrize("first", [S.PENDING, S.PREPARING])
def test_walk_waits_for_an_earlier_item_still_being_probed(first: ItemState) -> None:
    """Item 2 was probed first, but item 1's duration is unknown: nothing is decided yet,
    so whichever probe finishes first, the admitted set is the same."""
    out = admit(Tally(), entries((first, None), (S.PREPARED, 5.0)), Caps(max_audio_s=60))
    assert out.admit == () and out.skip == () and out.tally == Tally()


def test_failed_items_use_nothing_and_are_passed_over() -> None:
    out = admit(
        Tally(), entries((S.FAILED, None), (S.DEAD, None), (S.PREPARED, 50.0)), Caps(max_audio_s=60)
    )
    assert out.admit == ("i3",) and out.tally.line == 3 and out.tally.used_s == 50


def test_succeeded_items_count_but_are_not_released_again() -> None:
    """A re-run with a cap counts what earlier runs already transcribed."""
    out = admit(Tally(), entries((S.SUCCEEDED, 40.0), (S.PREPARED, 30.0)), Caps(max_audio_s=60))
    assert out.admit == () and [e.id for e in out.skip] == ["i2"]
    assert out.tally.used_s == 40 and out.tally.skip_from == 2


def test_cost_cap_uses_each_models_price() -> None:
    es = [
        Entry("a", 1, S.PREPARED, 100.0, "cheap"),
        Entry("b", 2, S.PREPARED, 100.0, "dear"),
        Entry("c", 3, S.PREPARED, 100.0, "cheap"),
    ]
    out = admit(Tally(), es, Caps(max_cost=1.0, prices={"cheap": 0.001, "dear": 0.01}))
    assert out.admit == ("a",) and [e.id for e in out.skip] == ["b", "c"]
    assert out.tally.used_cost == pytest.approx(0.1)


def test_once_over_the_cap_only_skippable_states_are_skipped() -> None:
    """After the cap, PENDING and PREPARED items are skipped; one being prepared right now
    is left for when it lands in PREPARED."""
    out = admit(
        Tally(line=1, used_s=60, skip_from=2),
        entries((S.SUCCEEDED, 60), (S.PENDING, None), (S.PREPARING, None), (S.PREPARED, 1.0)),
        Caps(max_audio_s=60),
    )
    assert [e.id for e in out.skip] == ["i2", "i4"]


def test_caps_cover() -> None:
    assert Caps(max_audio_s=10).covers(Caps(max_audio_s=5))
    assert not Caps(max_audio_s=5).covers(Caps(max_audio_s=10))
    assert not Caps(max_audio_s=5).covers(Caps())  # no cap admits more than any cap


# --- the ledger side --------------------------------------------------------------------


def prepare(led: Ledger, item_id: str, seconds: float) -> None:
    """What prepare_step records for an item of a budgeted batch: PREPARED, parked."""
    assert led.claim(item_id, S.PENDING, S.PREPARING, owner="t", lease_s=60)
    assert led.move(
        item_id,
        S.PREPARING,
        S.PREPARED,
        owner="t",
        next_run_at=PARKED,
        audio_duration_ms=int(seconds * 1000),
    )


def states(led: Ledger) -> dict[str, str]:
    return {
        r.key: r.state.value + ("/parked" if is_parked(r.next_run_at) else "")
        for r in led.list_items(BATCH)
    }


def test_ledger_admission_in_manifest_order_whatever_the_probe_order(ledger: Ledger) -> None:
    """Five items of 10..50 s under a 65 s cap, prepared in the order 3, 1, 5, 2, 4: the
    admitted items are exactly lines 1-3 and lines 4-5 end SKIPPED (budget_exceeded)."""
    ids = add(ledger, "a", "b", "c", "d", "e")
    set_caps(ledger, BATCH, Caps(max_audio_s=65))
    secs = dict(zip(ids, (10, 20, 30, 40, 50), strict=True))
    for n in (2, 0, 4):
        prepare(ledger, ids[n], secs[ids[n]])
        advance(ledger, BATCH)
    assert states(ledger) == {
        "a": "PREPARED",
        "b": "PENDING",
        "c": "PREPARED/parked",
        "d": "PENDING",
        "e": "PREPARED/parked",
    }
    assert count_parked(ledger) == 2  # the sweeper leaves them out of its backpressure
    prepare(ledger, ids[1], 20)
    advance(ledger, BATCH)
    assert states(ledger)["c"] == "PREPARED"  # released once b was known
    prepare(ledger, ids[3], 40)
    advance(ledger, BATCH)
    assert states(ledger) == {
        "a": "PREPARED",
        "b": "PREPARED",
        "c": "PREPARED",
        "d": "SKIPPED",
        "e": "SKIPPED",
    }
    skipped = ledger.list_items(BATCH, states=[S.SKIPPED])
    assert {r.error_code for r in skipped} == {"budget_exceeded"}
    assert "max_audio_hours" in (skipped[0].error_message or "")
    assert [a["state"] for a in ledger.attempts_of(ids[3])] == ["SKIPPED"]
    budget = get_budget(ledger, BATCH)
    assert budget is not None and budget.tally == Tally(3, 60.0, 0.0, 4)


def test_ledger_cap_reached_skips_unprepared_items_at_once(ledger: Ledger) -> None:
    """Once an item passes the cap, the items after it are SKIPPED before anyone spends
    time preparing them."""
    ids = add(ledger, "a", "b", "c", "d")
    set_caps(ledger, BATCH, Caps(max_audio_s=15))
    prepare(ledger, ids[0], 10)
    prepare(ledger, ids[1], 10)
    advance(ledger, BATCH)
    assert states(ledger) == {"a": "PREPARED", "b": "SKIPPED", "c": "SKIPPED", "d": "SKIPPED"}


def test_ledger_higher_cap_readmits_skipped_items(ledger: Ledger) -> None:
    """A higher cap (retry --max-audio-hours) restarts SKIPPED items as new attempts and
    carries on from the running total; the same cap again changes nothing."""
    ids = add(ledger, "a", "b", "c")
    set_caps(ledger, BATCH, Caps(max_audio_s=15))
    for i in ids:
        prepare(ledger, i, 10)
    advance(ledger, BATCH)
    assert states(ledger) == {"a": "PREPARED", "b": "SKIPPED", "c": "SKIPPED"}
    assert set_caps(ledger, BATCH, Caps(max_audio_s=15)) == []
    again = set_caps(ledger, BATCH, Caps(max_audio_s=25))
    assert sorted(again) == sorted(ids[1:])
    assert states(ledger) == {"a": "PREPARED", "b": "PENDING", "c": "PENDING"}
    prepare(ledger, ids[1], 10)
    prepare(ledger, ids[2], 10)
    advance(ledger, BATCH)
    assert states(ledger) == {"a": "PREPARED", "b": "PREPARED", "c": "SKIPPED"}
    assert [a["number"] for a in ledger.attempts_of(ids[1])] == [1, 2]


def test_ledger_removing_the_cap_releases_parked_items(ledger: Ledger) -> None:
    ids = add(ledger, "a", "b")
    set_caps(ledger, BATCH, Caps(max_audio_s=100))
    prepare(ledger, ids[1], 10)
    set_caps(ledger, BATCH, Caps())
    assert get_budget(ledger, BATCH) is None
    assert states(ledger) == {"a": "PENDING", "b": "PREPARED"}
    assert advance(ledger, BATCH) is None


def test_ledger_concurrent_advances_admit_each_item_once(ledger: Ledger) -> None:
    """Eight threads advance the same batch while its 40 items are prepared: the running
    total ends exactly at the sum of the admitted prefix, whoever won each compare-and-set."""
    keys = [f"k{n:02d}" for n in range(40)]
    ids = add(ledger, *keys)
    set_caps(ledger, BATCH, Caps(max_audio_s=100.0))
    for n, i in enumerate(ids):
        prepare(ledger, i, 3.0 + n % 4)  # 3, 4, 5, 6, 3, ...
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                advance(ledger, BATCH)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    durations = [3.0 + n % 4 for n in range(40)]
    fit, total = 0, 0.0
    while fit < 40 and total + durations[fit] <= 100.0:
        total += durations[fit]
        fit += 1
    rows = ledger.list_items(BATCH)
    admitted = [r.key for r in rows if r.state is S.PREPARED and not is_parked(r.next_run_at)]
    assert admitted == keys[:fit]
    assert [r.key for r in rows if r.state is S.SKIPPED] == keys[fit:]
    budget = get_budget(ledger, BATCH)
    assert budget is not None and budget.tally.used_s == pytest.approx(total)


# --- the prepare step with a budget, over the real ledger -------------------------------


@pytest.mark.ffmpeg
def test_prepare_step_parks_then_admission_releases_in_order(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The real prepare step on real files (2, 3 and 4 s) under a 5.5 s cap, prepared last
    line first: each prepared item is parked (the step returns None, so a worker hands
    nothing off), lines 1-2 are released once both are known, line 3 is SKIPPED and its
    normalized audio deleted."""
    from support import bare_flow, ffmpeg

    from pipeline.flow.media import MediaKeeper
    from pipeline.ledger import ItemSeed
    from pipeline.stages.prepare import prepare_step
    from pipeline.storage import LocalStore

    seeds = []
    for n, seconds in enumerate((2, 3, 4), 1):
        wav = tmp_path / f"t{n}.wav"
        ffmpeg(["-f", "lavfi", "-i", f"sine=frequency={200 * n}:duration={seconds}", str(wav)])
        seeds.append(
            ItemSeed(
                f"t{n}",
                n,
                str(wav),
                {"source": str(wav), "model": "tiny.en", "engine": "local"},
                f"f{n}",
            )
        )
    ledger.sync_items(BATCH, seeds, engine="local", model="tiny.en")
    set_caps(ledger, BATCH, Caps(max_audio_s=5.5))
    store = LocalStore(tmp_path / "media")
    ctx = bare_flow(
        ledger=ledger,
        engine="local",
        model="tiny.en",
        media=MediaKeeper(store),
        scratch=tmp_path / "scratch",
        http=lambda: None,
    )
    rows = {r.key: r for r in ledger.list_items(BATCH)}
    assert prepare_step(ctx, rows["t3"]) is None
    assert states(ledger) == {"t1": "PENDING", "t2": "PENDING", "t3": "PREPARED/parked"}
    t3_media = ledger.list_items(BATCH, keys=["t3"])[0].media_key
    assert t3_media and store.exists(t3_media)
    assert prepare_step(ctx, rows["t1"]) is None
    assert states(ledger)["t1"] == "PREPARED"  # first line: nothing before it to wait for
    prepare_step(ctx, rows["t2"])
    assert states(ledger) == {"t1": "PREPARED", "t2": "PREPARED", "t3": "SKIPPED"}
    assert not store.exists(t3_media)
    budget = get_budget(ledger, BATCH)
    assert budget is not None and budget.tally.used_s == pytest.approx(5.0, abs=0.01)


def test_retry_with_a_higher_cap_keeps_the_other_cap_and_readmits(ledger: Ledger) -> None:
    """`retry BATCH --max-audio-hours H` (cli_ops._recap): the new audio cap, the cost cap
    kept, SKIPPED items restarted; no flag changes nothing."""
    from pipeline.cli.ops import _recap
    from pipeline.settings import Settings

    settings = Settings(prices={"tiny.en": {"per_second": 0.01}})
    ids = add(ledger, "a", "b")
    set_caps(ledger, BATCH, Caps(max_audio_s=15, max_cost=100.0, prices={"tiny.en": 0.01}))
    for i in ids:
        prepare(ledger, i, 10)
    advance(ledger, BATCH)
    assert states(ledger) == {"a": "PREPARED", "b": "SKIPPED"}
    assert _recap(settings, ledger, BATCH, None, None) == []
    assert _recap(settings, ledger, BATCH, 0.01, None) == [ids[1]]  # 36 s
    budget = get_budget(ledger, BATCH)
    assert budget is not None and budget.caps.max_audio_s == pytest.approx(36.0)
    assert budget.caps.max_cost == 100.0 and budget.tally.used_s == 10.0
    assert states(ledger)["b"] == "PENDING"


def test_scheduled_run_gets_its_schedules_caps(tmp_path: Path) -> None:
    """A `[[distributed.schedules]]` entry's max_audio_hours caps each batch it starts,
    before any item exists; max_cost without a price starts nothing."""
    from types import SimpleNamespace

    from pipeline.ledger import open_ledger, sqlite_url
    from pipeline.settings import Settings
    from workers.schedules import start_scheduled_run

    src = tmp_path / "incoming"
    src.mkdir()
    (src / "a.wav").write_bytes(b"RIFF")
    led = open_ledger(sqlite_url(tmp_path / "ledger.db"))
    sched = {"source": f"file://{src}/", "out": str(tmp_path / "out")}
    settings = Settings(
        engine="dashscope",
        model="fun-asr",
        distributed={
            "schedules": [
                {"name": "capped", "max_audio_hours": 2, **sched},
                {"name": "priced", "max_cost": 5, **sched},
            ]
        },
    )
    wctx = SimpleNamespace(settings=settings, ledger=led)
    batch = start_scheduled_run(wctx, "capped")
    assert batch is not None
    budget = get_budget(led, batch)
    assert budget is not None and budget.caps.max_audio_s == 7200.0
    assert start_scheduled_run(wctx, "priced") is None  # no price for fun-asr: not run


def test_cost_cap_prices_each_item_by_its_own_model(ledger: Ledger) -> None:
    """A submit-style cap (the batch's model fun-asr priced, the rest of the table priced
    too): lines naming the dearer model are counted at its price, so the cap admits exactly
    the prefix that fits; a line naming a model with no price never fits."""
    from pipeline.planning.pricing import budget_caps
    from pipeline.settings import Settings

    settings = Settings(
        engine="dashscope",
        model="fun-asr",
        prices={
            "fun-asr": {"per_second": 0.001, "currency": "CNY"},
            "qwen3-asr-flash-filetrans": {"per_second": 0.01, "currency": "CNY"},
            "other-region": {"per_second": 0.0001, "currency": "USD"},  # not addable: left out
        },
    )
    caps, currency = budget_caps(settings, "dashscope", ["fun-asr"], max_cost=1.5, others=True)
    assert currency == "CNY" and set(caps.prices) == {"fun-asr", "qwen3-asr-flash-filetrans"}
    dear = {"model": "qwen3-asr-flash-filetrans"}
    specs = [("a", {}), ("b", dear), ("c", {}), ("d", dear)]
    ledger.ensure_batch(BATCH, kind="submit", out="/o", engine="dashscope", model="fun-asr")
    ledger.sync_items(
        BATCH,
        [ItemSeed(k, n, f"/in/{k}.wav", {"id": k, **s}, k) for n, (k, s) in enumerate(specs, 1)],
        engine="dashscope",
        model="fun-asr",
    )
    set_caps(ledger, BATCH, caps, currency=currency)
    ids = {r.key: r.id for r in ledger.list_items(BATCH)}
    # a: 100 s x 0.001 = 0.1; b: 100 s x 0.01 = 1.0 (1.1 so far); c: 300 s x 0.001 = 0.3
    # (1.4); d: 100 s x 0.01 = 1.0 would make 2.4 > 1.5. Priced by the batch's model
    # alone, d would have fitted (1.5), and b and d together would have cost 0.2.
    for key, secs in (("d", 100), ("b", 100), ("a", 100), ("c", 300)):
        prepare(ledger, ids[key], secs)
        advance(ledger, BATCH)
    assert states(ledger) == {"a": "PREPARED", "b": "PREPARED", "c": "PREPARED", "d": "SKIPPED"}
    budget = get_budget(ledger, BATCH)
    assert budget is not None and budget.tally.used_cost == pytest.approx(1.4)


def test_an_item_whose_model_has_no_price_never_fits_a_cost_cap() -> None:
    es = [Entry("a", 1, S.PREPARED, 10.0, "priced"), Entry("b", 2, S.PREPARED, 1.0, "unknown")]
    out = admit(Tally(), es, Caps(max_cost=100.0, prices={"priced": 0.001}))
    assert out.admit == ("a",) and [e.id for e in out.skip] == ["b"]
    # The local engine's models cost 0 unless priced ("*").
    out = admit(Tally(), es, Caps(max_cost=0.02, prices={"priced": 0.001, "*": 0.0}))
    assert out.admit == ("a", "b")
