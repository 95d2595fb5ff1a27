"""Budget admission: which items of a batch fit under its audio-hours and cost caps. Pure.

The rule, exactly: items are taken in manifest order (``line_no``). An item's audio is its
normalized duration (trimmed by ``start_s``/``end_s``), known once it is PREPARED; its cost
is that many seconds times its model's price per second. Walking from the first line, an
item is **admitted** while the running totals of the items admitted before it plus its own
stay within every cap (``<=``). Items that failed (FAILED, DEAD) use nothing and are passed
over. The first item that would pass a cap, and every item after it, is **SKIPPED** with
code ``budget_exceeded``, even a later one small enough to fit: the admitted items are
always a prefix of the manifest, so a run with a cap transcribes the beginning of an archive
and a later run with a higher cap carries on from where it stopped.

Items are probed in parallel, so the walk stops at the first item whose duration is not
known yet and resumes when it is: admission never depends on which probe finished first.
The running totals (:class:`Tally`) are kept in the ledger per batch and advanced by
compare-and-set (``pipeline/ledger/budgets.py``), so workers on many hosts agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.states import ItemState

# States an item can be moved to SKIPPED from: not claimed, not yet transcribing.
SKIPPABLE = frozenset({ItemState.PENDING, ItemState.PREPARED})
_PASSED = frozenset({ItemState.FAILED, ItemState.DEAD})
ANY_MODEL = "*"  # in Caps.prices: the price of a model not named (the local engine's 0)


@dataclass(frozen=True, slots=True)
class Caps:
    """A batch's caps; ``prices`` maps a model to its price per audio second (``"*"``: any
    model not named). An item is priced by its own model: a manifest line may name one."""

    max_audio_s: float | None = None
    max_cost: float | None = None
    prices: Mapping[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.max_audio_s is not None or self.max_cost is not None

    def covers(self, other: Caps) -> bool:
        """True when these caps admit at least what ``other``'s do (None: no cap)."""
        pairs = ((self.max_audio_s, other.max_audio_s), (self.max_cost, other.max_cost))
        return all(
            mine is None or (theirs is not None and mine >= theirs) for mine, theirs in pairs
        )


@dataclass(frozen=True, slots=True)
class Tally:
    """A batch's running totals: every item on a line up to ``line`` is decided."""

    line: int = 0
    used_s: float = 0.0
    used_cost: float = 0.0
    skip_from: int | None = None  # the first line over a cap: it and all after are skipped


@dataclass(frozen=True, slots=True)
class Entry:
    """What admission needs to know of one item."""

    id: str
    line_no: int
    state: ItemState
    seconds: float | None  # normalized audio; None until prepared
    model: str
    media_key: str | None = None  # normalized audio to let go of when skipped


@dataclass(frozen=True, slots=True)
class Admission:
    tally: Tally
    admit: tuple[str, ...] = ()  # PREPARED items to release
    skip: tuple[Entry, ...] = ()  # items to move to SKIPPED (from the state read)

    @property
    def changed(self) -> bool:
        return bool(self.admit or self.skip)


def cost_of(caps: Caps, model: str, seconds: float) -> float | None:
    """None: the model has no price, so the item never fits under a cost cap."""
    rate = caps.prices.get(model, caps.prices.get(ANY_MODEL))
    return None if rate is None else seconds * rate


def admit(tally: Tally, entries: Iterable[Entry], caps: Caps) -> Admission:
    """Advance ``tally`` over ``entries`` (the batch's items after ``tally.line``, in
    manifest order): what to admit, what to skip, and the new totals."""
    line, used_s, used_cost, skip_from = tally.line, tally.used_s, tally.used_cost, tally.skip_from
    admitted: list[str] = []
    skipped: list[Entry] = []
    for e in sorted(entries, key=lambda e: e.line_no):
        if e.line_no <= line:
            continue
        if skip_from is not None:
            if e.state in SKIPPABLE:
                skipped.append(e)
            continue
        if e.state in _PASSED:
            line = e.line_no
            continue
        if e.seconds is None or e.state in (
            ItemState.PENDING,
            ItemState.PREPARING,
            ItemState.SKIPPED,
        ):
            break  # not probed yet (or waiting to be re-admitted): decide later
        cost = cost_of(caps, e.model, e.seconds)
        fits = (caps.max_audio_s is None or used_s + e.seconds <= caps.max_audio_s + 1e-9) and (
            caps.max_cost is None or (cost is not None and used_cost + cost <= caps.max_cost + 1e-9)
        )
        if not fits:
            skip_from = e.line_no
            if e.state in SKIPPABLE:
                skipped.append(e)
            continue
        line, used_s, used_cost = e.line_no, used_s + e.seconds, used_cost + (cost or 0.0)
        if e.state is ItemState.PREPARED:
            admitted.append(e.id)
    return Admission(Tally(line, used_s, used_cost, skip_from), tuple(admitted), tuple(skipped))


def skip_message(caps: Caps, tally: Tally, currency: str | None = None) -> str:
    """Why an item was skipped, for its ``budget_exceeded`` error."""
    parts = []
    if caps.max_audio_s is not None:
        parts.append(
            f"{tally.used_s:.1f} s ({tally.used_s / 3600:.4g} h) of audio admitted, "
            f"max_audio_hours {caps.max_audio_s / 3600:g}"
        )
    if caps.max_cost is not None:
        unit = f" {currency}" if currency else ""
        parts.append(f"cost {tally.used_cost:.4g}{unit} admitted, max_cost {caps.max_cost:g}{unit}")
    return (
        "over the budget: "
        + "; ".join(parts)
        + " (items are admitted in manifest order; raise the cap to admit more)"
    )
