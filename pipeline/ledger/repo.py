"""The ledger repository: one :class:`Ledger` over the tables, made of small parts.

=====================  ============================================================
``batch_store``        batches, the claim to write results.jsonl
``item_store``         entering items, new attempts (retry, reprocess), reading rows
``transitions``        compare-and-set state changes, checked against the state table
``queries``            due work, provider tasks, shared audio, operator actions
``statements``         the hot statements, built once
``rows``               ItemRow (decoded once) and the typed column sets of updates
=====================  ============================================================

Every state change is one UPDATE guarded by the state the caller expects (and, for claimed
states, by the lease owner), so a redelivered message or a second worker does no harm:
``False``/``None`` means someone else got there first.
"""

from __future__ import annotations

from pipeline.ledger.batch_store import BatchStore
from pipeline.ledger.item_store import ItemStore
from pipeline.ledger.queries import QueryStore
from pipeline.ledger.rows import (
    AttemptColumns,
    ItemColumns,
    ItemRow,
    ItemSeed,
    SyncReport,
    _aware,
    add_timing,
    attempt_end,
    item_params,
    utcnow,
)
from pipeline.ledger.transitions import Move, TransitionStore

__all__ = [
    "AttemptColumns",
    "ItemColumns",
    "ItemRow",
    "ItemSeed",
    "Ledger",
    "Move",
    "SyncReport",
    "_aware",
    "add_timing",
    "attempt_end",
    "item_params",
    "utcnow",
]


class Ledger(BatchStore, ItemStore, TransitionStore, QueryStore):
    """The ledger: batches, items, transitions and queries over one engine."""
