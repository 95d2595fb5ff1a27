"""The ledger repository: compare-and-set transitions over the tables.

Every state change is one UPDATE guarded by the state the caller expects (and, for claimed
states, by the lease owner), so a redelivered message or a second worker does no harm:
``False``/``None`` means someone else got there first.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Select,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from pipeline.ledger.tables import actions, attempts, batches, items
from pipeline.states import TERMINAL, ItemState


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class ItemRow:
    id: str
    batch_id: str
    key: str
    line_no: int
    source: str
    spec: Mapping[str, Any]
    fingerprint: str
    source_stamp: str | None
    state: ItemState
    attempt: int
    tries: int
    lease_owner: str | None
    lease_until: datetime | None
    next_run_at: datetime | None
    polls: int
    submitted_at: datetime | None
    provider_task_id: str | None
    media_key: str | None
    media_url: str | None
    probe: Mapping[str, Any] | None
    audio_duration_ms: int | None
    error_code: str | None
    error_message: str | None
    error_detail: Mapping[str, Any] | None
    outputs: Mapping[str, str] | None
    timings: Mapping[str, float] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ItemRow:
        m = row._mapping
        values = {name: m[name] for name in _ROW_FIELDS}
        values["state"] = ItemState(values["state"])
        for k in _ROW_TIMES:
            values[k] = _aware(values[k])
        return cls(**values)


_ROW_FIELDS = tuple(f.name for f in fields(ItemRow))
_ROW_TIMES = (
    "lease_until",
    "next_run_at",
    "submitted_at",
    "created_at",
    "updated_at",
    "finished_at",
)


# The statements of the hot paths (every step of every item) are built once. Executed
# with a parameter dict, an UPDATE without .values() sets the columns named in it; the
# WHERE clause takes ``w_*`` parameters. A reused statement object skips construction and
# cache-key generation, which is about half of SQLAlchemy's client CPU per statement.
@functools.cache
def _cas(*, owner: bool = False, lease_before: bool = False, returning: str = "") -> Update:
    """UPDATE items … WHERE id = :w_id AND state = :w_state [AND owner] [AND lease <]."""
    cond = [items.c.id == bindparam("w_id"), items.c.state == bindparam("w_state")]
    if owner:
        cond.append(items.c.lease_owner == bindparam("w_owner"))
    if lease_before:
        cond.append(items.c.lease_until < bindparam("w_lease_before"))
    stmt = update(items).where(and_(*cond))
    if returning == "row":
        return stmt.returning(*items.c)
    if returning == "attempt":
        return stmt.returning(items.c.attempt, items.c.timings)
    return stmt


@functools.cache
def _cas_closing(
    *, owner: bool, lease_before: bool, item_keys: tuple[str, ...], attempt_keys: tuple[str, ...]
) -> Update:
    """PostgreSQL: an item's compare-and-set and its attempt's facts in one statement (the
    item's UPDATE as a data-modifying CTE): no BEGIN/COMMIT round trips. A row comes back
    only if the item moved. Item values are ``i_*`` parameters, attempt values ``a_*``; an
    attempt given no timings keeps the item's."""
    moved = (
        _cas(owner=owner, lease_before=lease_before)
        .values({k: bindparam(f"i_{k}", type_=items.c[k].type) for k in item_keys})
        .returning(items.c.attempt, items.c.timings)
        .cte("moved")
    )
    closing: dict[str, Any] = {
        k: bindparam(f"a_{k}", type_=attempts.c[k].type) for k in attempt_keys
    }
    closing.setdefault("timings", func.coalesce(moved.c.timings, literal({}, JSON)))
    return (
        update(attempts)
        .where(and_(attempts.c.item_id == bindparam("w_id"), attempts.c.number == moved.c.attempt))
        .values(closing)
        .returning(attempts.c.number)
    )


@functools.cache
def _select_items(by: str) -> Select[Any]:
    if by == "ids":
        return select(items).where(items.c.id.in_(bindparam("w_ids", expanding=True)))
    return select(items).where(items.c[by] == bindparam("w_value")).order_by(items.c.line_no)


_MARK_DUE = update(items).where(
    and_(items.c.id.in_(bindparam("w_ids", expanding=True)), items.c.state == bindparam("w_state"))
)
_CLOSE_ATTEMPT = update(attempts).where(
    and_(attempts.c.item_id == bindparam("w_id"), attempts.c.number == bindparam("w_number"))
)
_REFS = select(func.count()).where(
    and_(items.c.media_key == bindparam("w_key"), items.c.state.not_in([s.value for s in TERMINAL]))
)
_INFLIGHT = select(
    select(func.count(func.distinct(items.c.provider_task_id)))
    .where(items.c.state.in_([ItemState.SUBMITTED.value, ItemState.PERSISTING.value]))
    .scalar_subquery()
    + select(func.count()).where(items.c.state == ItemState.SUBMITTING.value).scalar_subquery()
)


@dataclass(frozen=True, slots=True)
class ItemSeed:
    """What a manifest line contributes to the ledger."""

    key: str
    line_no: int
    source: str
    spec: Mapping[str, Any]
    fingerprint: str
    source_stamp: str | None = None
    failure: tuple[str, str] | None = None  # (code, message): fails at once (bad line)


@dataclass(frozen=True, slots=True)
class SyncReport:
    created: int
    reset: int
    unchanged: int


class Ledger:
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

    # batches -------------------------------------------------------------------------
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

    def due_rows(
        self, now: datetime, *, limit: int = 2000, ignore_marks: bool = False
    ) -> list[ItemRow]:
        """Rows some step could act on now, across batches, oldest work first. With
        ``ignore_marks``, every waiting row, however far off its ``next_run_at`` (the
        broker lost the messages those marks wait for)."""
        waiting = [ItemState.PENDING.value, ItemState.PREPARED.value, ItemState.SUBMITTED.value]
        due = (
            items.c.state.in_(waiting)
            if ignore_marks
            else and_(
                items.c.state.in_(waiting),
                or_(items.c.next_run_at.is_(None), items.c.next_run_at <= now),
            )
        )
        query = (
            select(items)
            .where(
                or_(
                    due,
                    and_(
                        items.c.state == ItemState.SUBMITTING.value,
                        or_(items.c.lease_until.is_(None), items.c.lease_until <= now),
                    ),
                )
            )
            .order_by(items.c.next_run_at.nulls_first(), items.c.created_at)
            .limit(limit)
        )
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query)]

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
        unfinished = select(items.c.id).where(
            and_(
                items.c.batch_id == batch_id,
                items.c.state.in_([s.value for s in ItemState if s not in TERMINAL]),
            )
        )
        stmt = (
            update(batches)
            .where(
                and_(
                    batches.c.id == batch_id,
                    batches.c.done_at.is_(None),
                    batches.c.intake_at.is_(None),  # submit is still entering items
                    or_(batches.c.closing_until.is_(None), batches.c.closing_until < now),
                    ~unfinished.exists(),
                )
            )
            .values(closing_by=owner, closing_until=now + timedelta(seconds=lease_s))
        )
        with self._single.connect() as conn:
            return conn.execute(stmt).rowcount == 1

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
            .where(and_(items.c.batch_id == batch_id, ~items.c.key.startswith("@")))
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

    # items ---------------------------------------------------------------------------
    def sync_items(
        self,
        batch_id: str,
        seeds: Sequence[ItemSeed],
        *,
        engine: str,
        model: str,
        force: bool = False,
        restart_running: bool = True,
    ) -> SyncReport:
        """Insert new items; start a new attempt for items whose spec or source changed
        (with ``restart_running`` False, only for items that are finished: a distributed
        item in flight may be mid-submission, and is left to finish as it is)."""
        now = utcnow()
        reset = unchanged = 0
        new_items: list[dict[str, Any]] = []
        new_attempts: list[dict[str, Any]] = []
        with self.engine.begin() as conn:
            existing = {
                r.key: r
                for r in conn.execute(
                    select(
                        items.c.id,
                        items.c.key,
                        items.c.state,
                        items.c.fingerprint,
                        items.c.source_stamp,
                        items.c.attempt,
                    ).where(items.c.batch_id == batch_id)
                )
            }
            for seed in seeds:
                old = existing.get(seed.key)
                state = ItemState.FAILED if seed.failure else ItemState.PENDING
                error = dict(
                    zip(("error_code", "error_message"), seed.failure or (None, None), strict=True)
                )
                base = dict(
                    line_no=seed.line_no,
                    source=seed.source,
                    spec=dict(seed.spec),
                    fingerprint=seed.fingerprint,
                    source_stamp=seed.source_stamp,
                    updated_at=now,
                )
                if old is None:
                    item_id = uuid.uuid4().hex
                    new_items.append(
                        dict(
                            id=item_id,
                            batch_id=batch_id,
                            key=seed.key,
                            state=state.value,
                            attempt=1,
                            tries=0,
                            polls=0,
                            created_at=now,
                            finished_at=now if seed.failure else None,
                            **base,
                            **error,
                        )
                    )
                    new_attempts.append(
                        _attempt_values(item_id, 1, engine, model, seed.spec, now, state)
                    )
                    continue
                changed = (
                    old.fingerprint != seed.fingerprint or old.source_stamp != seed.source_stamp
                )
                if not (
                    force or changed or (seed.failure and old.state != ItemState.FAILED)
                ) or not (restart_running or ItemState(old.state).terminal):
                    unchanged += 1
                    continue
                number = old.attempt + 1
                conn.execute(
                    update(items)
                    .where(items.c.id == old.id)
                    .values(
                        state=state,
                        attempt=number,
                        tries=0,
                        polls=0,
                        lease_owner=None,
                        lease_until=None,
                        next_run_at=None,
                        provider_task_id=None,
                        submitted_at=None,
                        media_key=None,
                        media_url=None,
                        error_detail=None,
                        timings=None,
                        finished_at=now if seed.failure else None,
                        **base,
                        **(error if seed.failure else {"error_code": None, "error_message": None}),
                    )
                )
                self._open_attempt(conn, old.id, number, engine, model, seed.spec, now, state)
                reset += 1
            # New items in two statements, not two per line (a 100,000-line manifest).
            if new_items:
                conn.execute(insert(items), new_items)
                conn.execute(insert(attempts), new_attempts)
        return SyncReport(len(new_items), reset, unchanged)

    def restart(
        self,
        item_id: str,
        *,
        spec: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
        engine: str = "",
        model: str = "",
    ) -> bool:
        """A new attempt from PENDING (operator retry, reprocess, DLQ replay).

        Outputs of the last success stay in place until the new attempt writes its own.
        """
        row = self.get(item_id)
        if row is None or row.key.startswith("@"):
            return False
        new_spec = dict(spec if spec is not None else row.spec)
        now = utcnow()
        with self.engine.begin() as conn:
            done = (
                conn.execute(
                    update(items)
                    .where(
                        and_(
                            items.c.id == item_id,
                            items.c.state == row.state.value,
                            items.c.attempt == row.attempt,
                        )
                    )
                    .values(
                        state=ItemState.PENDING.value,
                        attempt=row.attempt + 1,
                        tries=0,
                        polls=0,
                        lease_owner=None,
                        lease_until=None,
                        next_run_at=None,
                        provider_task_id=None,
                        submitted_at=None,
                        media_key=None,
                        media_url=None,
                        error_code=None,
                        error_message=None,
                        error_detail=None,
                        finished_at=None,
                        spec=new_spec,
                        timings=None,
                        fingerprint=fingerprint or row.fingerprint,
                        updated_at=now,
                    )
                ).rowcount
                == 1
            )
            if done:
                self._open_attempt(
                    conn,
                    item_id,
                    row.attempt + 1,
                    engine or str(new_spec.get("engine") or ""),
                    model or str(new_spec.get("model") or ""),
                    new_spec,
                    now,
                    ItemState.PENDING,
                )
                conn.execute(
                    update(batches).where(batches.c.id == row.batch_id).values(done_at=None)
                )
        return done

    def get(self, item_id: str) -> ItemRow | None:
        with self._single.connect() as conn:
            row = conn.execute(_select_items("id"), {"w_value": item_id}).first()
        return ItemRow.from_row(row) if row else None

    def get_many(self, item_ids: Iterable[str]) -> list[ItemRow]:
        """The rows that exist among ``item_ids``, in that order, in one query."""
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return []
        with self._single.connect() as conn:
            found = {
                r.id: ItemRow.from_row(r)
                for r in conn.execute(_select_items("ids"), {"w_ids": wanted})
            }
        return [found[i] for i in wanted if i in found]

    def list_items(
        self,
        batch_id: str | None = None,
        *,
        states: Iterable[ItemState] | None = None,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[ItemRow]:
        query = select(items).order_by(items.c.batch_id, items.c.line_no).limit(limit)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        if keys is not None:
            query = query.where(items.c.key.in_(list(keys)))
        if states is not None:
            query = query.where(items.c.state.in_([s.value for s in states]))
        with self._single.connect() as conn:
            return [ItemRow.from_row(r) for r in conn.execute(query)]

    def counts(self, batch_id: str | None) -> dict[str, int]:
        """Items by state in one batch (or, with None, in the whole ledger)."""
        query = select(items.c.state, func.count()).group_by(items.c.state)
        if batch_id is not None:
            query = query.where(items.c.batch_id == batch_id)
        with self._single.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    # transitions ---------------------------------------------------------------------
    def claim(
        self,
        item_id: str,
        expected: ItemState,
        to: ItemState,
        *,
        owner: str,
        lease_s: float,
        **values: Any,
    ) -> ItemRow | None:
        """CAS ``expected`` → claimed ``to`` with a lease (and ``values``); None if someone
        else has it."""
        now = utcnow()
        params = {
            "w_id": item_id,
            "w_state": expected.value,
            "state": to.value,
            "lease_owner": owner,
            "lease_until": now + timedelta(seconds=lease_s),
            "updated_at": now,
            **values,
        }
        with self._single.connect() as conn:  # the claimed row comes back in the same trip
            row = conn.execute(_cas(returning="row"), params).first()
        return ItemRow.from_row(row) if row is not None else None

    def renew(self, item_id: str, state: ItemState, *, owner: str, lease_s: float) -> bool:
        return self._update(
            item_id, state, owner, lease_until=utcnow() + timedelta(seconds=lease_s)
        )

    def move(
        self,
        item_id: str,
        expected: ItemState,
        to: ItemState,
        *,
        owner: str | None = None,
        attempt: Mapping[str, Any] | None = None,
        then: Callable[[Connection, str], object] | None = None,
        **values: Any,
    ) -> bool:
        """CAS ``expected`` → ``to``; leaving a claimed state also drops the lease.

        ``attempt``: facts for the current attempt (its task id, its end), written in the
        same transaction when the move succeeds; ``then`` (with ``attempt``) runs in that
        transaction too, after the move.
        """
        now = utcnow()
        if not to.claimed:
            values.setdefault("lease_owner", None)
            values.setdefault("lease_until", None)
        if to in TERMINAL:
            values.setdefault("finished_at", now)
            values.setdefault("next_run_at", None)
        return self._update(
            item_id, expected, owner, attempt=attempt, then=then, state=to, updated_at=now, **values
        )

    def fail(
        self,
        item_id: str,
        expected: ItemState,
        code: str,
        message: str,
        *,
        dead: bool = False,
        owner: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> bool:
        to = ItemState.DEAD if dead else ItemState.FAILED
        return self.move(
            item_id,
            expected,
            to,
            owner=owner,
            error_code=str(code),
            error_message=message,
            error_detail=dict(detail or {}) or None,
            attempt=attempt_end(to, str(code), message, detail),
            then=self.on_dead if dead else None,
        )

    def adopt_task(
        self, task_id: str, media_urls: Sequence[str], *, submitted_at: datetime
    ) -> list[str]:
        """SUBMITTING items whose URL a found provider task holds → SUBMITTED with its id.

        One transaction, so no reader ever sees the task recorded for some of its files
        and not yet for the others (reconciliation skips tasks the ledger already knows).
        Returns the ids of the items moved.
        """
        if not media_urls:
            return []
        now = utcnow()
        with self.engine.begin() as conn:
            moved = list(
                conn.execute(
                    update(items)
                    .where(
                        and_(
                            items.c.state == ItemState.SUBMITTING.value,
                            items.c.media_url.in_(list(media_urls)),
                        )
                    )
                    .values(
                        state=ItemState.SUBMITTED.value,
                        provider_task_id=task_id,
                        submitted_at=submitted_at,
                        polls=0,
                        next_run_at=now,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                    .returning(items.c.id, items.c.attempt)
                )
            )
            for item_id, number in moved:
                conn.execute(
                    update(attempts)
                    .where(and_(attempts.c.item_id == item_id, attempts.c.number == number))
                    .values(provider_task_id=task_id)
                )
        return [item_id for item_id, _ in moved]

    def release_expired(self, *, now: datetime | None = None) -> list[tuple[str, ItemState]]:
        """Claims whose lease ran out fall back to the state they were claimed from."""
        from pipeline.ledger.sweep import release_expired

        return release_expired(self.engine, now=now)

    def _update(
        self,
        item_id: str,
        expected: ItemState,
        owner: str | None,
        guard_lease_before: datetime | None = None,
        attempt: Mapping[str, Any] | None = None,
        then: Callable[[Connection, str], object] | None = None,
        **values: Any,
    ) -> bool:
        where: dict[str, Any] = {"w_id": item_id, "w_state": expected.value}
        if owner is not None:
            where["w_owner"] = owner
        if guard_lease_before is not None:
            where["w_lease_before"] = guard_lease_before
        if "state" in values:
            values["state"] = ItemState(values["state"]).value
        shape = {"owner": owner is not None, "lease_before": guard_lease_before is not None}
        if not attempt:
            with self._single.connect() as conn:
                return conn.execute(_cas(**shape), {**where, **values}).rowcount == 1
        if self.engine.dialect.name == "postgresql":
            stmt = _cas_closing(
                **shape, item_keys=tuple(sorted(values)), attempt_keys=tuple(sorted(attempt))
            )
            params = {
                **where,
                **{f"i_{k}": v for k, v in values.items()},
                **{f"a_{k}": v for k, v in attempt.items()},
            }
            if then is None:
                with self._single.connect() as conn:
                    return conn.execute(stmt, params).first() is not None
            with self.engine.begin() as conn:
                if conn.execute(stmt, params).first() is None:
                    return False
                then(conn, item_id)
                return True
        with self.engine.begin() as conn:  # SQLite: no DML in a CTE
            moved = conn.execute(_cas(**shape, returning="attempt"), {**where, **values}).first()
            if moved is None:
                return False
            # An attempt closed without timings of its own keeps the item's (as just stored).
            closing = {"timings": dict(moved.timings or {}), **attempt}
            conn.execute(_CLOSE_ATTEMPT, {"w_id": item_id, "w_number": moved.attempt, **closing})
            if then is not None:
                then(conn, item_id)
            return True

    def set_fields(self, item_id: str, **values: Any) -> None:
        """Unguarded bookkeeping (probe facts, counters) that no transition depends on."""
        with self._single.connect() as conn:
            conn.execute(
                update(items).where(items.c.id == item_id).values(updated_at=utcnow(), **values)
            )

    # attempts ------------------------------------------------------------------------
    def _open_attempt(
        self,
        conn: Any,
        item_id: str,
        number: int,
        engine: str,
        model: str,
        spec: Mapping[str, Any],
        now: datetime,
        state: ItemState,
    ) -> None:
        conn.execute(
            insert(attempts).values(
                **_attempt_values(item_id, number, engine, model, spec, now, state)
            )
        )

    def attempts_of(self, item_id: str) -> list[Mapping[str, Any]]:
        with self._single.connect() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.item_id == item_id).order_by(attempts.c.number)
            )
            return [dict(r._mapping) for r in rows]

    # operator actions ----------------------------------------------------------------
    def record_action(
        self, actor: str, action: str, batch_id: str, item_ids: Sequence[str] = (), **detail: Any
    ) -> None:
        """One row for the batch and one per item changed: who did what, and when."""
        now = utcnow()
        rows = [
            {
                "at": now,
                "actor": actor[:200],
                "action": action,
                "batch_id": batch_id,
                "item_id": None,
                "detail": {**detail, "items": len(item_ids)},
            }
        ]
        rows += [
            {
                "at": now,
                "actor": actor[:200],
                "action": action,
                "batch_id": batch_id,
                "item_id": i,
                "detail": detail,
            }
            for i in item_ids
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(actions), rows)

    def actions_of(
        self, *, item_id: str | None = None, batch_id: str | None = None, limit: int = 200
    ) -> list[Mapping[str, Any]]:
        """An item's actions, or a batch's batch-level ones; newest first."""
        query = select(actions).order_by(actions.c.at.desc(), actions.c.id.desc()).limit(limit)
        if item_id is not None:
            query = query.where(actions.c.item_id == item_id)
        else:
            query = query.where(and_(actions.c.batch_id == batch_id, actions.c.item_id.is_(None)))
        with self._single.connect() as conn:
            return [{**r._mapping, "at": _aware(r.at)} for r in conn.execute(query)]

    def timings(self, batch_id: str, *, limit: int | None = None) -> list[Mapping[str, float]]:
        """Per-stage seconds of each item's current attempt (for status reports); with
        ``limit``, of the first ``limit`` items in manifest order (a bounded sample)."""
        # ix_items_batch_timed (partial): a batch not started yet is not read at all.
        query = (
            select(items.c.timings)
            .where(and_(items.c.batch_id == batch_id, items.c.timings.is_not(None)))
            .order_by(items.c.line_no)
            .limit(limit)
        )
        with self._single.connect() as conn:
            return [dict(t or {}) for t in conn.execute(query).scalars()]

    def mark_due(self, rows: Iterable[ItemRow], at: datetime, **values: Any) -> int:
        """``next_run_at = at`` (and ``values``) for these rows, each only while still in
        the state read; one statement per state."""
        by_state: dict[ItemState, list[str]] = {}
        for row in rows:
            by_state.setdefault(row.state, []).append(row.id)
        marked = 0
        with self._single.connect() as conn:
            for state, ids in by_state.items():
                marked += conn.execute(
                    _MARK_DUE,
                    {
                        "w_ids": ids,
                        "w_state": state.value,
                        "next_run_at": at,
                        "updated_at": utcnow(),
                        **values,
                    },
                ).rowcount
        return marked

    def update_if(self, item_id: str, state: ItemState, **values: Any) -> bool:
        """Bookkeeping guarded by the state only (retry counters, poll schedule)."""
        return self._update(item_id, state, None, updated_at=utcnow(), **values)

    def by_task(self, task_id: str) -> list[ItemRow]:
        with self._single.connect() as conn:
            rows = conn.execute(_select_items("provider_task_id"), {"w_value": task_id})
            return [ItemRow.from_row(r) for r in rows]

    def known_task_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these provider task ids any item or attempt has recorded."""
        if not task_ids:
            return set()
        with self._single.connect() as conn:
            a = conn.execute(
                select(items.c.provider_task_id).where(items.c.provider_task_id.in_(list(task_ids)))
            ).scalars()
            b = conn.execute(
                select(attempts.c.provider_task_id).where(
                    attempts.c.provider_task_id.in_(list(task_ids))
                )
            ).scalars()
            return {t for t in (*a, *b) if t}

    def inflight_tasks(self) -> int:
        """Provider tasks submitted and not yet finished with, across every batch."""
        with self._single.connect() as conn:
            return int(conn.execute(_INFLIGHT).scalar() or 0)

    def count_states(self, *states: ItemState) -> int:
        with self._single.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(items.c.state.in_([s.value for s in states]))
                ).scalar()
                or 0
            )

    @contextmanager
    def media_guard(self, key: str) -> Iterator[Callable[[], int]]:
        """Held while the shared audio under ``key`` is stored, or checked and deleted;
        yields a function counting the unfinished items that still need it.

        Identical audio is stored once (content-addressed) and deleted by whichever item
        finishes last. Unguarded, an item could find the object present and skip its upload
        just before another item, seeing no user of it yet, deleted it; the first item then
        submitted a URL answering 404 (found by tests/distributed: about one 50-file run with
        copies in three). PostgreSQL: a transaction-scoped advisory lock, across processes
        and hosts; SQLite (embedded, one process): a thread lock.
        """
        if self.engine.dialect.name != "postgresql":
            with self._media_locks[hash(key) % len(self._media_locks)]:
                yield lambda: self.media_refs(key)
            return
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        lock_id = int.from_bytes(digest, "big", signed=True)
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
            yield lambda: int(conn.execute(_REFS, {"w_key": key}).scalar() or 0)

    def media_refs(self, key: str) -> int:
        """Items not yet finished that still need the stored audio under ``key``."""
        with self._single.connect() as conn:
            return int(conn.execute(_REFS, {"w_key": key}).scalar() or 0)


def _attempt_values(
    item_id: str,
    number: int,
    engine: str,
    model: str,
    spec: Mapping[str, Any],
    now: datetime,
    state: ItemState,
) -> dict[str, Any]:
    """A new attempt's row."""
    return dict(
        item_id=item_id,
        number=number,
        engine=engine,
        model=spec.get("model") or model,
        options=dict(spec.get("options") or {}),
        state="RUNNING" if not state.terminal else state.value,
        started_at=now,
        finished_at=now if state.terminal else None,
        timings={},
    )


def attempt_end(
    state: ItemState,
    code: str | None = None,
    message: str | None = None,
    detail: Mapping[str, Any] | None = None,
    *,
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """An attempt's closing values, for ``move(attempt=...)``; its stage timings are
    ``timings`` when the caller has them, else the item's."""
    end = {
        "state": state.value,
        "finished_at": utcnow(),
        "error_code": code,
        "error_message": message,
        "error_detail": dict(detail or {}) or None,
    }
    return end if timings is None else {**end, "timings": dict(timings)}


def add_timing(timings: Mapping[str, float] | None, stage: str, seconds: float) -> dict[str, float]:
    """Stage timings with ``seconds`` more for ``stage``, to store with the next transition
    (no separate write)."""
    timings = dict(timings or {})
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    return timings
