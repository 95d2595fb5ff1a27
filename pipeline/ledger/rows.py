"""The ledger's row values, and the typed column sets its updates take.

An :class:`ItemRow` decodes its JSON and error columns once, where it is read: stages use
``row.request``, ``row.facts`` and ``row.failure``, never the raw dicts. Updates name their
columns through :class:`ItemColumns` / :class:`AttemptColumns` (TypedDicts), so mypy
rejects a misspelt column; the ledger also refuses one at run time (``check_columns``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypedDict

from pipeline.inputs.ids import is_problem_key
from pipeline.ledger.values import AudioFacts, Failure, ItemRequest
from pipeline.states import ItemState


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
    spec: Mapping[str, Any]  # as stored: shown (dlq show, the console) and copied on reprocess
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
    error_retryable: bool | None = None
    # Decoded once, from the columns above.
    request: ItemRequest = field(init=False, repr=False, compare=False)
    facts: AudioFacts | None = field(init=False, repr=False, compare=False)
    failure: Failure | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "request", ItemRequest.decode(self.spec))
        object.__setattr__(self, "facts", AudioFacts.decode(self.probe))
        object.__setattr__(
            self,
            "failure",
            Failure.decode(
                self.error_code, self.error_message, self.error_retryable, self.error_detail
            ),
        )

    @classmethod
    def from_row(cls, row: Any) -> ItemRow:
        m = row._mapping
        values = {name: m[name] for name in _ROW_FIELDS}
        values["state"] = ItemState(values["state"])
        for k in _ROW_TIMES:
            values[k] = _aware(values[k])
        return cls(**values)

    @property
    def is_problem(self) -> bool:
        """A manifest line that never became an item: nothing to run, retry or count."""
        return is_problem_key(self.key)

    @property
    def item_id(self) -> str | None:
        """The id the manifest gave (a problem line's may be None)."""
        return self.request.manifest_id if self.is_problem else self.key

    def model_or(self, default: str) -> str:
        """The model this item is transcribed with: its own, else the batch's."""
        return self.request.model_or(default)


_ROW_FIELDS = tuple(f.name for f in fields(ItemRow) if f.init)
_ROW_TIMES = (
    "lease_until",
    "next_run_at",
    "submitted_at",
    "created_at",
    "updated_at",
    "finished_at",
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
    # Keys this sync entered FAILED from their seeds (a line that cannot become an item, a
    # missing local file): failures of this run, though no step ran for them.
    refused: tuple[str, ...] = ()
    # Keys whose line asked for a new attempt that this sync did not start: the item is
    # claimed by a worker, unfinished without ``restart_running``, or was moved by someone
    # else between the read and the reset (counted in ``unchanged`` too).
    kept: tuple[str, ...] = ()


class ItemColumns(TypedDict, total=False):
    """The item columns a transition or bookkeeping update may set (absent: kept).

    ``failure`` stands for the four ``error_*`` columns: a failure is written whole (its
    retryable flag with its code) or cleared whole (None).
    """

    tries: int
    polls: int
    lease_owner: str | None
    lease_until: datetime | None
    next_run_at: datetime | None
    submitted_at: datetime | None
    provider_task_id: str | None
    media_key: str | None
    media_url: str | None
    probe: Mapping[str, Any] | None
    audio_duration_ms: int | None
    failure: Failure | None
    outputs: Mapping[str, str] | None
    timings: Mapping[str, float] | None
    finished_at: datetime | None


class AttemptColumns(TypedDict, total=False):
    """An attempt's facts written with its item's transition (see ``attempt_end``)."""

    state: str
    finished_at: datetime
    provider_task_id: str
    provider_request_id: str | None
    error_code: str | None
    error_message: str | None
    error_retryable: bool | None
    error_detail: Mapping[str, Any] | None
    timings: Mapping[str, float]


_ITEM_KEYS = frozenset(ItemColumns.__annotations__)
_ATTEMPT_KEYS = frozenset(AttemptColumns.__annotations__)


def check_columns(values: Mapping[str, Any], attempt: Mapping[str, Any] | None = None) -> None:
    """Refuse unknown column names before any SQL (an UPDATE built from a parameter dict
    would otherwise ignore them)."""
    unknown = values.keys() - _ITEM_KEYS
    if attempt:
        unknown |= {f"attempt.{k}" for k in attempt.keys() - _ATTEMPT_KEYS}
    if unknown:
        raise TypeError(f"not an updatable column: {', '.join(sorted(unknown))}")


def item_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as column parameters: ``failure`` becomes its ``error_*`` columns."""
    if "failure" not in values:
        return dict(values)
    params = {k: v for k, v in values.items() if k != "failure"}
    failure: Failure | None = values["failure"]
    params.update(failure.columns() if failure is not None else NO_FAILURE_COLUMNS)
    return params


NO_FAILURE_COLUMNS: Mapping[str, Any] = {
    "error_code": None,
    "error_message": None,
    "error_retryable": None,
    "error_detail": None,
}


def attempt_values(
    item_id: str,
    number: int,
    engine: str,
    model: str,
    request: ItemRequest,
    now: datetime,
    state: ItemState,
) -> dict[str, Any]:
    """A new attempt's row."""
    return dict(
        item_id=item_id,
        number=number,
        engine=engine,
        model=request.model_or(model),
        options=dict(request.options),
        state="RUNNING" if not state.terminal else state.value,
        started_at=now,
        finished_at=now if state.terminal else None,
        timings={},
    )


def attempt_end(
    state: ItemState,
    failure: Failure | None = None,
    *,
    timings: Mapping[str, float] | None = None,
) -> AttemptColumns:
    """An attempt's closing values, for ``move(attempt=...)``; its stage timings are
    ``timings`` when the caller has them, else the item's."""
    end: AttemptColumns = {
        "state": state.value,
        "finished_at": utcnow(),
        "error_code": None,
        "error_message": None,
        "error_retryable": None,
        "error_detail": None,
    }
    if failure is not None:
        end["error_code"] = failure.code
        end["error_message"] = failure.message
        end["error_retryable"] = failure.retryable
        end["error_detail"] = dict(failure.detail) or None
    if timings is not None:
        end["timings"] = dict(timings)
    return end


def add_timing(timings: Mapping[str, float] | None, stage: str, seconds: float) -> dict[str, float]:
    """Stage timings with ``seconds`` more for ``stage``, to store with the next transition
    (no separate write)."""
    timings = dict(timings or {})
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 4)
    return timings
