"""Batches: creating them, claiming the writing of results.jsonl, what they hold."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, text, update

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.rows import utcnow
from pipeline.ledger.statements import CLAIM_CLOSE
from pipeline.ledger.tables import attempts, batches, items
from pipeline.ledger.values import PROBLEM_PREFIX
from pipeline.states import TERMINAL, ItemState


class BatchStore(LedgerBase):
    def ensure_batch(
        self,
        batch_id: str,
        *,
        kind: str,
        out: str,
        engine: str,
        model: str,
        manifest: str | None = None,
        options: Mapping[str, Any] | None = None,
        then: Callable[[Connection], object] | None = None,
    ) -> None:
        """Create (or update) the batch; ``then`` runs in the same transaction (an event
        announcing it, written with it or not at all)."""
        with self.engine.begin() as conn:
            exists = conn.execute(select(batches.c.id).where(batches.c.id == batch_id)).first()
            values = dict(
                kind=kind,
                out=out,
                engine=engine,
                model=model,
                manifest=manifest,
                options=dict(options or {}),
            )
            if exists:
                conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))
            else:
                conn.execute(insert(batches).values(id=batch_id, created_at=utcnow(), **values))
            if then is not None:
                then(conn)

    def reserve_out(
        self,
        batch_id: str,
        *,
        out: str,
        kind: str,
        engine: str,
        model: str,
        manifest: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any] | None:
        """Create batch ``batch_id`` writing to ``out``, unless a batch already writes there:
        then that batch (and nothing is created). Two submissions racing for one ``out``
        are serialized (a PostgreSQL advisory lock on it), so only one of them gets it."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                digest = hashlib.blake2b(b"out:" + out.encode(), digest_size=8).digest()
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"),
                    {"id": int.from_bytes(digest, "big", signed=True)},
                )
            held = conn.execute(
                select(batches)
                .where(batches.c.out == out)
                .order_by(batches.c.created_at.desc())
                .limit(1)
            ).first()
            if held is not None:
                return dict(held._mapping)
            conn.execute(
                insert(batches).values(
                    id=batch_id,
                    created_at=utcnow(),
                    kind=kind,
                    out=out,
                    engine=engine,
                    model=model,
                    manifest=manifest,
                    options=dict(options or {}),
                )
            )
        return None

    def batch(self, batch_id: str) -> Mapping[str, Any] | None:
        with self._single.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        return dict(row._mapping) if row else None

    def open_batches(self) -> list[str]:
        """Batches whose results.jsonl has not been written yet, and whose items are all
        entered (a submit still entering one holds it open)."""
        with self._single.connect() as conn:
            return list(
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.done_at.is_(None), batches.c.intake_at.is_(None))
                    .order_by(batches.c.created_at)
                ).scalars()
            )

    def mark_batch_done(self, batch_id: str, done: bool = True) -> None:
        with self._single.connect() as conn:
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(done_at=utcnow() if done else None)
            )

    def claim_batch_close(self, batch_id: str, *, owner: str, lease_s: float) -> bool:
        """Compare-and-set: ``owner`` may write the batch's results.jsonl now. True only if
        the batch is not done, every item is finished, and no one else holds the claim (or
        their claim lapsed). Of two workers finishing a batch's last items at once, the one
        whose statement runs last sees both items finished; the row lock then lets one of
        them through, so exactly one writes and neither skips."""
        now = utcnow()
        params = {
            "w_batch": batch_id,
            "w_now": now,
            "closing_by": owner,
            "closing_until": now + timedelta(seconds=lease_s),
        }
        with self._single.connect() as conn:  # asked each time an item of it finishes
            return conn.execute(CLAIM_CLOSE, params).rowcount == 1

    def end_batch_close(
        self,
        batch_id: str,
        *,
        owner: str,
        written: bool,
        then: Callable[[Connection], object] | None = None,
    ) -> bool:
        """Give back the claim; if ``written``, the batch is done, unless an item was
        restarted meanwhile (then it stays open and is closed again when that item ends).
        ``then`` runs in the transaction that marks it done (the batch.completed outbox row),
        so the event exists exactly when the batch is done."""
        unfinished = select(items.c.id).where(
            and_(
                items.c.batch_id == batch_id,
                items.c.state.in_([s.value for s in ItemState if s not in TERMINAL]),
            )
        )
        released = {"closing_by": None, "closing_until": None}
        mine = and_(batches.c.id == batch_id, batches.c.closing_by == owner)
        if written:
            with self.engine.begin() as conn:
                if conn.execute(
                    update(batches)
                    .where(mine, ~unfinished.exists())
                    .values(done_at=utcnow(), **released)
                ).rowcount:
                    if then is not None:
                        then(conn)
                    return True
        with self._single.connect() as conn:
            conn.execute(update(batches).where(mine).values(**released))
        return False

    def batch_for_out(self, out: str) -> Mapping[str, Any] | None:
        """The newest batch writing to ``out`` (a normalized directory or URL prefix)."""
        query = (
            select(batches)
            .where(batches.c.out == out)
            .order_by(batches.c.created_at.desc())
            .limit(1)
        )
        with self._single.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def models_in_use(self, batch_id: str) -> list[tuple[str, str, int]]:
        """(engine, model, items) of the items' current attempts: what the batch is being
        transcribed with now, reprocessing included."""
        query = (
            select(attempts.c.engine, attempts.c.model, func.count())
            .select_from(
                items.join(
                    attempts,
                    and_(attempts.c.item_id == items.c.id, attempts.c.number == items.c.attempt),
                )
            )
            .where(and_(items.c.batch_id == batch_id, ~items.c.key.startswith(PROBLEM_PREFIX)))
            .group_by(attempts.c.engine, attempts.c.model)
            .order_by(func.count().desc(), attempts.c.model)
        )
        with self._single.connect() as conn:
            return [(str(e), str(m), int(n)) for e, m, n in conn.execute(query)]

    def known_sources(self, sources: Sequence[str]) -> set[str]:
        """Which of these sources some batch already holds (for scheduled runs)."""
        found: set[str] = set()
        chunk = 500
        with self._single.connect() as conn:
            for i in range(0, len(sources), chunk):
                part = list(sources[i : i + chunk])
                found.update(
                    conn.execute(select(items.c.source).where(items.c.source.in_(part))).scalars()
                )
        return found

    def batch_ids(self) -> list[str]:
        with self._single.connect() as conn:
            return list(conn.execute(select(batches.c.id).order_by(batches.c.created_at)).scalars())
