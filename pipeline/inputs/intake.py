"""Streaming intake: a manifest of any length into the ledger in committed chunks.

Memory stays flat whatever the manifest's length: entries are read, seeded and entered one
chunk at a time (:mod:`pipeline.ledger.bulk`), and repeated ids are settled by the ledger's
unique key rather than by a set held here. The batch is marked as being entered until the
last chunk is in, so the sweeper never closes it half-entered; an intake that was killed
is resumed by entering the same INPUTs again: lines already in the ledger are kept (each
line's key is its id), the rest are added.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipeline.errors import FailureCode
from pipeline.inputs.batches import iter_seeds
from pipeline.inputs.manifest import InputStream
from pipeline.ledger import Ledger
from pipeline.ledger.bulk import Clash, Entered, bulk_intake, set_intake, tidy
from pipeline.ledger.repo import ItemSeed, utcnow
from pipeline.models import ManifestProblem

__all__ = ["CHUNK", "IntakeReport", "enter_stream"]

TIDY_AFTER = 50_000  # rows entered: then VACUUM ANALYZE, for index-only counts
CHUNK = 10_000  # rows per committed chunk: large enough for COPY to pay, small enough to wait for


@dataclass(frozen=True, slots=True)
class IntakeReport:
    total: int  # manifest entries read (items and problems)
    created: int  # rows entered now
    kept: int  # rows an earlier, interrupted intake had entered already
    duplicates: int


def _duplicate(
    clash: Clash, stream: InputStream, seeds: Callable[[Any], Iterable[ItemSeed]]
) -> ItemSeed:
    """The failing row for a line repeating an id another line holds, named as
    :func:`pipeline.inputs.manifest._settle` names it."""
    seed = clash.seed
    msg = (
        f"{stream.where(seed.line_no, seed.source)}: id {seed.key!r} is already used "
        f"{stream.ref(clash.held_line, clash.held_source)}"
    )
    problem = ManifestProblem(
        seed.line_no, FailureCode.DUPLICATE_ID.value, msg, seed.key, seed.source
    )
    return next(iter(seeds([problem])))


def enter_stream(
    ledger: Ledger,
    batch_id: str,
    stream: InputStream,
    *,
    engine: str,
    model: str,
    language: str | None,
    options: Mapping[str, Any] | None = None,
    on_chunk: Callable[[Sequence[str]], None] | None = None,
    chunk: int = CHUNK,
) -> IntakeReport:
    """Enter every entry of ``stream`` into batch ``batch_id``; ``on_chunk`` gets the ids of
    each committed chunk's new PENDING items (to queue their first step at once)."""

    def seeds(entries: Any) -> Iterable[ItemSeed]:
        return iter_seeds(entries, engine=engine, model=model, language=language, options=options)

    counts = {"total": 0, "created": 0, "kept": 0, "duplicates": 0}

    def settle(entered: Entered) -> None:
        counts["created"] += entered.created
        repeats = [c for c in entered.clashes if c.held_line != c.seed.line_no]
        counts["kept"] += len(entered.clashes) - len(repeats)
        if repeats:  # keyed by line: entered once, kept when resumed
            again = bulk.enter([_duplicate(c, stream, seeds) for c in repeats])
            counts["created"] += again.created
            counts["kept"] += len(again.clashes)
            counts["duplicates"] += len(repeats)
        if on_chunk is not None and entered.pending:
            on_chunk(entered.pending)

    set_intake(ledger.engine, batch_id, utcnow())
    # The database enters one chunk while this thread reads, seeds and formats the next
    # (psycopg waits without the GIL): about twice the rate of doing one after the other.
    with (
        bulk_intake(ledger.engine, batch_id, engine_name=engine, model=model) as bulk,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake") as pool,
    ):
        it = iter(seeds(stream))
        running: Future[Entered] | None = None
        while part := list(itertools.islice(it, chunk)):
            counts["total"] += len(part)
            if running is not None:
                settle(running.result())
            running = pool.submit(bulk.enter_chunk, bulk.prepare(part))
        if running is not None:
            settle(running.result())
    set_intake(ledger.engine, batch_id, None)
    if counts["created"] >= TIDY_AFTER:
        tidy(ledger.engine)
    return IntakeReport(**counts)
