"""What every part of the ledger shares: the engine and its autocommit twin."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine


class LedgerBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reads and single-statement writes (every compare-and-set is one UPDATE) need no
        # transaction around them: in autocommit they cost one round trip instead of three
        # (BEGIN, the statement, COMMIT or ROLLBACK). Same pool, per-checkout setting.
        self._single = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._media_locks = [threading.Lock() for _ in range(64)]
        # Called with the connection and the item's id inside the transaction that moves an
        # item to DEAD (its batch.items_dead outbox row, pipeline.notify): set by the
        # process that owns the ledger, None where no one is told.
        self.on_dead: Callable[[Connection, str], object] | None = None
