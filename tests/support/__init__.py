"""Helpers shared by test modules and benchmarks: generated speech and WER, strict subtitle
readers, waiting, real services of a test's own, a bare FlowContext.

Imported as ``from support import ...`` (``tests/`` is on sys.path; bench/ puts it there);
``conftest`` names are ambiguous because several test folders have their own.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .services import (
    AWS_ENV,
    PG_ADMIN,
    Proc,
    RedisServer,
    free_port,
    moto_server,
    s3_client,
    scratch_database,
    spawn,
)
from .speech import HARVARD, LIBRIVOX_DIR, ffmpeg, normalize_words, say, wer
from .subtitles import assert_monotonic, parse_srt, parse_vtt
from .waiting import WaitTimeout, wait_until

if TYPE_CHECKING:
    from pipeline.flow.context import FlowContext

__all__ = [
    "AWS_ENV",
    "HARVARD",
    "LIBRIVOX_DIR",
    "PG_ADMIN",
    "Proc",
    "RedisServer",
    "WaitTimeout",
    "assert_monotonic",
    "bare_flow",
    "ffmpeg",
    "free_port",
    "moto_server",
    "normalize_words",
    "parse_srt",
    "parse_vtt",
    "s3_client",
    "say",
    "scratch_database",
    "spawn",
    "wait_until",
    "wer",
]


def bare_flow(**fields: Any) -> FlowContext:
    """A FlowContext with default settings and nothing wired but ``fields`` (services, or
    StepRules fields such as ``retry`` or ``lease_s``): for tests of logic that only touches
    a few of its parts (the ledger, retry, hand-offs)."""
    from dataclasses import fields as fields_of

    from pipeline.flow.context import FlowContext
    from pipeline.flow.rules import StepRules
    from pipeline.settings import load_settings

    settings = load_settings()
    blank: Any = None
    rule_names = {f.name for f in fields_of(StepRules)}
    rules: dict[str, Any] = dict(
        engine="dashscope",
        model=settings.model,
        language=None,
        formats=("json",),
        retry=settings.retry,
        poll=settings.poll,
        limits=settings.limits,
    )
    rules.update({k: v for k, v in fields.items() if k in rule_names})
    defaults: dict[str, Any] = dict(
        ledger=blank,
        owner="me",
        media=blank,
        sinks=blank,
        scratch=blank,
        http=blank,
        clip_engine=blank,
    )
    services = {k: v for k, v in fields.items() if k not in rule_names}
    return FlowContext(rules=StepRules(**rules), **{**defaults, **services})


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


def item_row(n: int, state: Any, *, spec: dict[str, Any], at: Any, **values: Any) -> Any:
    """A ledger row as a step or the planner sees it (item ``n`` of batch ``b``, attempt 1,
    nothing recorded yet), for the pure decisions' tests; ``values`` override columns."""
    from pipeline.ledger import ItemRow

    base: dict[str, Any] = dict(
        id=f"id{n}",
        batch_id="b",
        key=f"k{n}",
        line_no=n,
        source=f"/a/{n}.wav",
        spec=spec,
        fingerprint="f",
        source_stamp=None,
        state=state,
        attempt=1,
        tries=0,
        lease_owner=None,
        lease_until=None,
        next_run_at=None,
        polls=0,
        submitted_at=None,
        provider_task_id=None,
        media_key=None,
        media_url=None,
        probe=None,
        audio_duration_ms=None,
        error_code=None,
        error_message=None,
        error_detail=None,
        outputs=None,
        timings=None,
        created_at=at,
        updated_at=at,
        finished_at=None,
    )
    return ItemRow(**{**base, **values})


def stream_duration(path: Any) -> float:
    """ffprobe's own duration of the first audio stream (what plan and budgets are checked
    against)."""
    import subprocess

    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=duration",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return float(out)
