"""What every part of the ledger shares: the engine and its autocommit twin."""

from __future__ import annotations

import threading

from sqlalchemy import Engine


class LedgerBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reads and single-statement writes (every compare-and-set is one UPDATE) need no
        # transaction around them: in autocommit they cost one round trip instead of three
        # (BEGIN, the statement, COMMIT or ROLLBACK). Same pool, per-checkout setting.
        self._single = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._media_locks = [threading.Lock() for _ in range(64)]
