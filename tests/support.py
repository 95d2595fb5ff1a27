"""Helpers shared by test modules: generated speech, WER, ffmpeg.

Imported as ``from support import ...`` (``tests/`` is on sys.path); ``conftest`` names are
ambiguous because several test folders have their own.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.flow.context import FlowContext

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")

# Harvard sentences (IEEE 1969), list 1: the reference texts for generated speech.
HARVARD = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]


def say(text: str, dest: Path, *, voice: str = "en-us", rate: int = 160) -> Path:
    """Speak ``text`` with espeak-ng into a 16 kHz mono WAV."""
    raw = dest.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
    ffmpeg(["-i", str(raw), "-ac", "1", "-ar", "16000", str(dest)])
    raw.unlink()
    return dest


def ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def normalize_words(text: str) -> str:
    """Lowercase, hyphens to spaces, punctuation out, the usual WER normalisation."""
    text = text.lower().replace("-", " ").replace("mr.", "mister").replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalize_words(reference), normalize_words(hypothesis)))


def bare_flow(**fields: Any) -> FlowContext:
    """A FlowContext with default settings and nothing wired but ``fields``: for tests of
    logic that only touches a few of its parts (the ledger, retry, hand-offs)."""
    from pipeline.flow.context import FlowContext
    from pipeline.settings import load_settings

    settings = load_settings()
    blank: Any = None
    defaults: dict[str, Any] = dict(
        ledger=blank,
        owner="me",
        engine="dashscope",
        model=settings.model,
        language=None,
        formats=("json",),
        retry=settings.retry,
        poll=settings.poll,
        limits=settings.limits,
        media=blank,
        sinks=blank,
        scratch=blank,
        http=blank,
        clip_engine=blank,
    )
    return FlowContext(**{**defaults, **fields})


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth on localhost


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of the caller's own (its URL), dropped at the end together with
    any connection still open to it."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def walk(ledger: Any, item_id: str, to: Any, **last: Any) -> bool:
    """Moves a PENDING item to ``to`` along the async happy path (PENDING → PREPARING →
    PREPARED → SUBMITTING → SUBMITTED → PERSISTING → SUCCEEDED), one allowed transition at a
    time: the ledger refuses shortcuts. ``last`` goes with the final move."""
    from pipeline.states import ItemState as S

    path = (S.PENDING, S.PREPARING, S.PREPARED, S.SUBMITTING, S.SUBMITTED, S.PERSISTING)
    path += (S.SUCCEEDED,)
    steps = list(itertools.pairwise(path[: path.index(to) + 1]))
    for n, (old, new) in enumerate(steps, 1):
        if not ledger.move(item_id, old, new, **(last if n == len(steps) else {})):
            return False
    return True
