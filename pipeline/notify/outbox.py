"""The outbox: events written with the state change that causes them, claimed and recorded
by deliverers with compare-and-set, listed and replayed by operators.

Writers take the caller's connection (:func:`enqueue`, :func:`announce_completed`,
:func:`add_dead`), so the event commits or rolls back with the state change's transaction:
a crash neither loses an event nor invents one. Deliverers claim a try with one guarded
UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two of them never send the same try
at once; a claim that is never recorded (the deliverer died) runs out and the try is made
again, with the same id.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from pipeline.ledger.tables import DEAD_UNNOTED, attempts, batches, items
from pipeline.ledger.tables import notify_dead_noted as dead_noted
from pipeline.ledger.tables import notify_endpoints as endpoints
from pipeline.ledger.tables import notify_outbox as outbox
from pipeline.notify import events
from pipeline.notify.policy import Decision, Delivered, GiveUp, Gone, Retry
from pipeline.planning.pricing import PriceTable
from pipeline.settings import NotifySettings
from pipeline.states import ItemState

PENDING, DELIVERED, FAILED, DISABLED = "PENDING", "DELIVERED", "FAILED", "DISABLED"
STATES = (PENDING, DELIVERED, FAILED, DISABLED)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class Message:
    """One event for one endpoint: one row of the outbox."""

    id: str
    event_type: str
    batch_id: str | None
    url: str
    body: str
    state: str
    tries: int
    next_at: datetime | None
    claim: str | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Message:
        m = row._mapping
        values = {f.name: m[f.name] for f in fields(cls)}
        for k in ("next_at", "created_at", "updated_at", "delivered_at"):
            values[k] = _aware(values[k])
        return cls(**values)


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def batch_urls(
    batch: Mapping[str, Any] | None, notify: NotifySettings, extra: Iterable[str] = ()
) -> list[str]:
    """Where a batch's events go: ``notify.urls``, the batch's own (``--notify``, a
    schedule's ``notify_urls``, kept in its options) and ``extra``, each once."""
    own = list(((batch or {}).get("options") or {}).get("notify_urls") or [])
    return list(dict.fromkeys([*notify.urls, *own, *extra]))


# -- writing (inside the caller's transaction) -------------------------------------------------
def enqueue(
    conn: Connection,
    event: events.Event,
    urls: Iterable[str],
    *,
    batch_id: str | None = None,
    now: datetime | None = None,
    due: datetime | None = None,
) -> list[str]:
    """One outbox row per endpoint (DISABLED at once for a disabled endpoint), first tried
    at ``due`` (default: now); an event with a dedupe key already written for an endpoint
    is not written again. Returns the message ids written."""
    now = now or _utcnow()
    urls = list(dict.fromkeys(urls))
    if not urls:
        return []
    disabled = set(
        conn.execute(
            select(endpoints.c.url).where(
                and_(endpoints.c.url.in_(urls), endpoints.c.disabled_at.is_not(None))
            )
        ).scalars()
    )
    if event.dedupe is not None:
        seen = set(
            conn.execute(
                select(outbox.c.url).where(
                    and_(outbox.c.dedupe == event.dedupe, outbox.c.url.in_(urls))
                )
            ).scalars()
        )
        urls = [u for u in urls if u not in seen]
    ids = []
    for url in urls:
        msg_id = new_id()
        gone = url in disabled
        conn.execute(
            insert(outbox).values(
                id=msg_id,
                event_type=event.type,
                batch_id=batch_id,
                url=url,
                body=event.body.decode("utf-8"),
                dedupe=event.dedupe,
                state=DISABLED if gone else PENDING,
                tries=0,
                next_at=None if gone else (due or now),
                last_error="endpoint disabled (410 Gone)" if gone else None,
                created_at=now,
                updated_at=now,
            )
        )
        ids.append(msg_id)
    return ids


def announce_completed(
    conn: Connection,
    batch_id: str,
    *,
    notify: NotifySettings,
    results: str | None,
    now: datetime | None = None,
    extra_urls: Sequence[str] = (),
    prices: PriceTable | None = None,
    counts: Mapping[str, int] | None = None,
    audio_s: float | None = None,
) -> list[str]:
    """``batch.completed`` for ``batch_id``, from the ledger as ``conn`` sees it (or the
    ``counts`` and ``audio_s`` given). Call it in the transaction that marks the batch done.
    Its cost is the SUCCEEDED items' audio priced by ``prices``, each by the model of its
    current attempt; None without ``prices`` or when a model has no price."""
    batch = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
    info = dict(batch._mapping) if batch is not None else {}
    urls = batch_urls(info, notify, extra_urls)
    if not urls:
        return []
    if counts is None:
        counts = {
            state: n
            for state, n in conn.execute(
                select(items.c.state, func.count())
                .where(items.c.batch_id == batch_id)
                .group_by(items.c.state)
            )
        }
    if audio_s is None:
        audio_ms = conn.execute(
            select(func.coalesce(func.sum(items.c.audio_duration_ms), 0)).where(
                and_(items.c.batch_id == batch_id, items.c.state == ItemState.SUCCEEDED.value)
            )
        ).scalar()
        audio_s = int(audio_ms or 0) / 1000
    cost, currency = (
        prices.cost(usage(conn, batch_id, info)) if prices is not None else (None, None)
    )
    now = now or _utcnow()
    event = events.batch_completed(
        batch_id=batch_id,
        kind=str(info.get("kind") or ""),
        counts=counts,
        audio_s=audio_s,
        results=results,
        at=now,
        cost=cost,
        currency=currency,
        console_url=notify.console_url,
    )
    return enqueue(conn, event, urls, batch_id=batch_id, now=now)


def usage(
    conn: Connection, batch_id: str, batch: Mapping[str, Any]
) -> list[tuple[str, str, float]]:
    """(engine, model, audio seconds) of the batch's SUCCEEDED items, by the engine and
    model of each item's current attempt (a manifest line may name its own model, and a
    reprocess another one); the batch's own where an item has no attempt row."""
    current = and_(attempts.c.item_id == items.c.id, attempts.c.number == items.c.attempt)
    rows = conn.execute(
        select(attempts.c.engine, attempts.c.model, func.sum(items.c.audio_duration_ms))
        .select_from(items.outerjoin(attempts, current))
        .where(and_(items.c.batch_id == batch_id, items.c.state == ItemState.SUCCEEDED.value))
        .group_by(attempts.c.engine, attempts.c.model)
    )
    return [
        (
            str(engine or batch.get("engine") or ""),
            str(model or batch.get("model") or ""),
            int(ms or 0) / 1000,
        )
        for engine, model, ms in rows
    ]


def complete_batch(
    engine: Engine,
    batch_id: str,
    *,
    notify: NotifySettings,
    results: str | None,
    extra_urls: Sequence[str] = (),
    again: bool = False,
    prices: PriceTable | None = None,
    counts: Mapping[str, int] | None = None,
    audio_s: float | None = None,
) -> bool:
    """Mark the batch done (compare-and-set on ``done_at IS NULL``; ``again``: also when
    already done, for a re-run that did new work) and write its ``batch.completed`` in the
    same transaction. False: it was already done."""
    now = _utcnow()
    where = batches.c.id == batch_id
    if not again:
        where = and_(where, batches.c.done_at.is_(None))
    with engine.begin() as conn:
        if conn.execute(update(batches).where(where).values(done_at=now)).rowcount != 1:
            return False
        announce_completed(
            conn,
            batch_id,
            notify=notify,
            results=results,
            now=now,
            extra_urls=extra_urls,
            prices=prices,
            counts=counts,
            audio_s=audio_s,
        )
    return True


def note_dead(engine: Engine, notify: NotifySettings, *, limit: int = 5000) -> int:
    """DEAD items not yet announced: noted, and one ``batch.items_dead`` per batch (per
    ``events.MAX_IDS`` ids) written, in one transaction. Returns how many items were noted.
    The sweeper's safety net: workers note each item as it dies (:func:`add_dead`), so this
    finds only items moved to DEAD by a process without that hook. It reads the partial
    index of DEAD items whose attempt is not marked noted on the row (migration 0011), and
    looks only those up in ``notify_dead_noted``: the work is the items still to announce,
    not every DEAD item ever announced."""
    now = _utcnow()
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                select(items.c.id, items.c.key, items.c.batch_id, items.c.attempt)
                # The index's own predicate, as text, so the planner can prove it applies.
                .where(text(DEAD_UNNOTED))
                .order_by(items.c.batch_id, items.c.line_no)
                .limit(limit)
            ).all()
            if not rows:
                return 0
            # Noted in notify_dead_noted but not on the row (written by a process older than
            # the column): marked below, not announced again. A lookup by key of these ids,
            # not a join the planner might answer by reading the whole table.
            known = {
                (str(item_id), int(attempt))
                for item_id, attempt in conn.execute(
                    select(dead_noted.c.item_id, dead_noted.c.attempt).where(
                        dead_noted.c.item_id.in_([r.id for r in rows])
                    )
                )
            }
            fresh = [r for r in rows if (r.id, r.attempt) not in known]
            if fresh:
                conn.execute(
                    insert(dead_noted),
                    [{"item_id": r.id, "attempt": r.attempt, "noted_at": now} for r in fresh],
                )
            _mark_noted(conn, [(r.id, r.attempt) for r in rows])
            by_batch: dict[str, list[str]] = {}
            for r in fresh:
                by_batch.setdefault(r.batch_id, []).append(r.key)
            for batch_id, keys in by_batch.items():
                batch = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
                urls = batch_urls(dict(batch._mapping) if batch else None, notify)
                for event in events.items_dead(
                    batch_id=batch_id, ids=keys, at=now, console_url=notify.console_url
                ):
                    enqueue(conn, event, urls, batch_id=batch_id, now=now)
            return len(fresh)
    except IntegrityError:  # another sweep noted them first
        return 0


def _mark_noted(conn: Connection, noted: Sequence[tuple[str, int]]) -> None:
    """Each (item, attempt) marked announced on the item's row, which takes it out of
    ``ix_items_dead_unnoted``. The attempt is the one announced, not whatever the row holds
    now: an item restarted meanwhile whose new attempt dies still gets announced."""
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("b_id"))
        .values(dead_noted=bindparam("b_attempt")),
        [{"b_id": item_id, "b_attempt": attempt} for item_id, attempt in noted],
    )


def add_dead(
    conn: Connection, item_id: str, *, notify: NotifySettings, now: datetime | None = None
) -> None:
    """An item just moved to DEAD, on the connection of the transaction that moved it
    (:attr:`pipeline.ledger.Ledger.on_dead`): noted, and its id added to its batch's
    ``batch.items_dead`` still waiting for its first try at each endpoint, or a new one
    written, first tried ``notify.dead_window_s`` from now. So the event commits with the
    DEAD state or not at all, and the items of a batch dying together are one delivery.
    A message a deliverer has claimed is never changed: ids after it make a new one."""
    now = now or _utcnow()
    item = conn.execute(
        select(items.c.key, items.c.batch_id, items.c.attempt).where(items.c.id == item_id)
    ).one()
    conn.execute(insert(dead_noted).values(item_id=item_id, attempt=item.attempt, noted_at=now))
    _mark_noted(conn, [(item_id, item.attempt)])
    batch = conn.execute(select(batches).where(batches.c.id == item.batch_id)).first()
    for url in batch_urls(dict(batch._mapping) if batch else None, notify):
        if not _extend_dead(conn, item.batch_id, url, item.key, now):
            event = events.items_dead(
                batch_id=item.batch_id, ids=[item.key], at=now, console_url=notify.console_url
            )[0]
            due = now + timedelta(seconds=notify.dead_window_s)
            enqueue(conn, event, [url], batch_id=item.batch_id, now=now, due=due)


def _extend_dead(conn: Connection, batch_id: str, url: str, key: str, now: datetime) -> bool:
    """``key`` added to the batch's untried ``batch.items_dead`` for ``url``; False when
    there is none (or it is full). On PostgreSQL the row is locked, so a deliverer's claim
    (SKIP LOCKED) waits for this transaction or passes the row by; one that claimed it
    first makes the re-checked ``tries = 0`` fail, and a new message is written."""
    untried = and_(
        outbox.c.event_type == events.BATCH_ITEMS_DEAD,
        outbox.c.batch_id == batch_id,
        outbox.c.url == url,
        outbox.c.state.in_([PENDING, DISABLED]),
        outbox.c.tries == 0,
        outbox.c.claim.is_(None),
    )
    query = select(outbox.c.id, outbox.c.body).where(untried).order_by(outbox.c.created_at.desc())
    if conn.dialect.name == "postgresql":
        # Items of one batch dying at once would each find no message yet and write their
        # own: their transactions take turns here instead (SQLite's writers always do).
        digest = hashlib.blake2b(f"items_dead:{batch_id}:{url}".encode(), digest_size=8)
        lock = int.from_bytes(digest.digest(), "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock})
        query = query.with_for_update()
    found = conn.execute(query.limit(1)).first()
    if found is None:
        return False
    body = events.with_dead_id(found.body, key)
    if body is None:
        return key in events.dead_ids(found.body)
    moved = conn.execute(
        update(outbox)
        .where(and_(outbox.c.id == found.id, untried))
        .values(body=body, updated_at=now)
    )
    return moved.rowcount == 1


def write_event(
    engine: Engine, event: events.Event, urls: Iterable[str], *, batch_id: str | None = None
) -> list[str]:
    """An event in a transaction of its own (a dedupe key keeps it to one per endpoint)."""
    try:
        with engine.begin() as conn:
            return enqueue(conn, event, urls, batch_id=batch_id)
    except IntegrityError:  # written by someone else meanwhile
        return []


# -- delivering ------------------------------------------------------------------------------
def claim_due(
    engine: Engine,
    *,
    hold_s: float,
    limit: int = 20,
    ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[Message]:
    """Take up to ``limit`` due messages for one try each: their ``tries`` counted, their
    ``next_at`` pushed ``hold_s`` ahead (if the try is never recorded, it is due again
    then), and a claim token only this call knows."""
    now = now or _utcnow()
    token = uuid.uuid4().hex
    due = and_(outbox.c.state == PENDING, outbox.c.next_at <= now)
    pick = select(outbox.c.id).where(due).order_by(outbox.c.next_at).limit(limit)
    if ids is not None:
        pick = pick.where(outbox.c.id.in_(list(ids)))
    if engine.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(outbox)
        .where(and_(outbox.c.id.in_(pick.scalar_subquery()), due))
        .values(
            claim=token,
            tries=outbox.c.tries + 1,
            updated_at=now,
            next_at=now + timedelta(seconds=hold_s),
        )
        .returning(*outbox.c)
    )
    with engine.begin() as conn:
        return [Message.from_row(r) for r in conn.execute(stmt)]


def record(
    engine: Engine,
    msg: Message,
    decision: Decision,
    *,
    status: int | None,
    error: str | None,
    now: datetime | None = None,
) -> str | None:
    """The outcome of ``msg``'s try, if ``msg`` still holds its claim; the new state, or
    None when the claim was lost (it ran out and another deliverer took the row)."""
    now = now or _utcnow()
    values: dict[str, Any] = {
        "claim": None,
        "last_status": status,
        "last_error": error,
        "updated_at": now,
    }
    if isinstance(decision, Delivered):
        values |= {"state": DELIVERED, "delivered_at": now, "next_at": None}
    elif isinstance(decision, Retry):
        values |= {"state": PENDING, "next_at": now + timedelta(seconds=decision.after_s)}
    elif isinstance(decision, Gone):
        values |= {"state": DISABLED, "next_at": None, "last_error": error or "410 Gone"}
    elif isinstance(decision, GiveUp):
        values |= {"state": FAILED, "next_at": None, "last_error": decision.reason}
    with engine.begin() as conn:
        moved = conn.execute(
            update(outbox)
            .where(and_(outbox.c.id == msg.id, outbox.c.claim == msg.claim))
            .values(**values)
        )
        if moved.rowcount != 1:
            return None
        if isinstance(decision, Gone) and status == 410:
            disable_endpoint(conn, msg.url, f"410 Gone from message {msg.id}", now=now)
    return str(values["state"])


def disable_endpoint(
    conn: Connection, url: str, reason: str, *, now: datetime | None = None
) -> None:
    """No more events to ``url``: recorded, and its waiting messages set DISABLED."""
    now = now or _utcnow()
    found = conn.execute(select(endpoints.c.url).where(endpoints.c.url == url)).first()
    if found is None:
        conn.execute(insert(endpoints).values(url=url, disabled_at=now, reason=reason))
    else:
        conn.execute(
            update(endpoints).where(endpoints.c.url == url).values(disabled_at=now, reason=reason)
        )
    conn.execute(
        update(outbox)
        .where(and_(outbox.c.url == url, outbox.c.state == PENDING, outbox.c.claim.is_(None)))
        .values(
            state=DISABLED, next_at=None, updated_at=now, last_error="endpoint disabled (410 Gone)"
        )
    )


def disabled_urls(
    engine: Engine, urls: Iterable[str] | None = None
) -> dict[str, Mapping[str, Any]]:
    query = select(endpoints).where(endpoints.c.disabled_at.is_not(None))
    if urls is not None:
        query = query.where(endpoints.c.url.in_(list(urls)))
    with engine.connect() as conn:
        return {
            r.url: {"disabled_at": _aware(r.disabled_at), "reason": r.reason}
            for r in conn.execute(query)
        }


def next_due(engine: Engine) -> datetime | None:
    """When the earliest waiting message is due (or its claim runs out)."""
    with engine.connect() as conn:
        return _aware(
            conn.execute(
                select(func.min(outbox.c.next_at)).where(outbox.c.state == PENDING)
            ).scalar()
        )


def count_due(engine: Engine, now: datetime | None = None) -> int:
    now = now or _utcnow()
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(and_(outbox.c.state == PENDING, outbox.c.next_at <= now))
            ).scalar()
            or 0
        )


# -- operators -------------------------------------------------------------------------------
def list_messages(
    engine: Engine,
    *,
    states: Sequence[str] | None = None,
    batch_id: str | None = None,
    ids: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[Message]:
    query = select(outbox).order_by(outbox.c.created_at.desc(), outbox.c.id).limit(limit)
    if ids is not None:
        query = query.where(outbox.c.id.in_(list(ids)))
    if states:
        query = query.where(outbox.c.state.in_(list(states)))
    if batch_id is not None:
        query = query.where(outbox.c.batch_id == batch_id)
    with engine.connect() as conn:
        return [Message.from_row(r) for r in conn.execute(query)]


def replay(engine: Engine, ids: Sequence[str] = (), *, failed: bool = False) -> list[str]:
    """Messages sent again from their first try: the ``ids`` given (any state; a disabled
    endpoint is enabled again, the operator having asked for it by name) or, with
    ``failed``, every FAILED one. Returns the ids queued."""
    now = _utcnow()
    with engine.begin() as conn:
        where = outbox.c.id.in_(list(ids)) if ids else outbox.c.state == FAILED
        if not ids and not failed:
            return []
        rows = conn.execute(select(outbox.c.id, outbox.c.url, outbox.c.state).where(where)).all()
        for url in {r.url for r in rows if r.state == DISABLED}:
            conn.execute(
                update(endpoints)
                .where(endpoints.c.url == url)
                .values(disabled_at=None, reason=None)
            )
        queued = [r.id for r in rows]
        if queued:
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(queued))
                .values(
                    state=PENDING,
                    tries=0,
                    next_at=now,
                    claim=None,
                    last_status=None,
                    last_error=None,
                    delivered_at=None,
                    updated_at=now,
                )
            )
    return queued
