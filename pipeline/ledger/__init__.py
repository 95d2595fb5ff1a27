"""The ledger: SQLite under the output dir (embedded) or PostgreSQL (distributed).

:func:`open_ledger` connects and brings the schema to the newest Alembic revision.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text

from pipeline.ledger.repo import ItemRow, ItemSeed, Ledger, SyncReport, utcnow
from pipeline.ledger.values import AudioFacts, Failure, ItemRequest

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "AudioFacts",
    "Failure",
    "ItemRequest",
    "ItemRow",
    "ItemSeed",
    "Ledger",
    "SyncReport",
    "open_ledger",
    "sqlite_url",
    "utcnow",
]

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x62756C6B  # "bulk": any constant shared by every bulkscribe process


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per checkout (about 2 ms of CPU per item in the
    # distributed bench). A connection that went stale with a database restart fails its
    # statement with OperationalError, which the Celery tasks retry; recycling keeps
    # connections younger than typical server and proxy idle timeouts.
    return create_engine(url, pool_recycle=1800, pool_size=5, max_overflow=10)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (status, progress) run beside the writer; NORMAL sync is durable
    # across process crashes, which is what resume after kill -9 needs.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade to head; a no-op (one cheap query) when already there.

    Alembic is imported only when there is something to upgrade: it costs about 0.4 s of
    start-up, which ``status`` and resumed runs would otherwise pay every time.
    """
    head = _script_head()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together would race to create the tables: one migrates,
            # the others wait here and then find the schema at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if head is not None and _current_revision(conn) == head:
            return
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


_REVISION = re.compile(
    r'^(down_revision|revision)(?:\s*:[^=\n]*)?\s*=\s*["\']?([\w-]+|None)["\']?\s*$', re.M
)


def _script_head() -> str | None:
    """The newest revision, read from the migration files' ``revision``/``down_revision``
    lines; None (let Alembic decide) unless they form one line of history."""
    revisions, parents = set(), set()
    for path in (_MIGRATIONS / "versions").glob("[0-9]*.py"):
        found = dict((k, v) for k, v in _REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found:
            return None
        revisions.add(found["revision"])
        parents.add(found.get("down_revision", "None"))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def open_ledger(url: str) -> Ledger:
    engine = make_engine(url)
    migrate(engine)
    return Ledger(engine)
