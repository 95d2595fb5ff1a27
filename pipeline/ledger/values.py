"""Typed values of an item row, decoded once where rows are read.

The ledger keeps an item's request (``spec``), its prepared audio facts (``probe``) and its
failure (``error_*``) in JSON and plain columns; stages read them through these frozen
values, so a misspelt field fails at construction (and under mypy), not as a silent
``None`` from ``dict.get``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipeline.errors import FailureCode, PipelineError, code_retryable, failure_of, is_retryable
from pipeline.inputs.ids import PROBLEM_PREFIX

__all__ = ["PROBLEM_PREFIX", "AudioFacts", "Failure", "ItemRequest"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True, slots=True)
class ItemRequest:
    """What an item asks for: its ``spec`` column (see ``batches.item_spec``)."""

    source: str | None = None  # as displayed; the fetchable URL is the row's ``source``
    engine: str | None = None
    model: str | None = None
    language: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    channel: int | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # per-item options
    # Manifest fields that may sit beside ``options`` (passed to the engine like options).
    context: Any = None
    hotwords: Any = None
    # A manifest problem row keeps the id its line asked for (it may be None).
    manifest_id: str | None = None

    @classmethod
    def decode(cls, stored: Mapping[str, Any] | None) -> ItemRequest:
        if not stored:
            return _NO_REQUEST
        options = stored.get("options")
        return cls(
            source=_opt_str(stored.get("source")),
            engine=_opt_str(stored.get("engine")),
            model=_opt_str(stored.get("model")),
            language=_opt_str(stored.get("language")),
            start_s=_opt_float(stored.get("start_s")),
            end_s=_opt_float(stored.get("end_s")),
            channel=_opt_int(stored.get("channel")),
            options=MappingProxyType(dict(options)) if options else _EMPTY,
            context=stored.get("context"),
            hotwords=stored.get("hotwords"),
            manifest_id=_opt_str(stored.get("id")),
        )

    def model_or(self, default: str) -> str:
        """The model this item is transcribed with: its own, else the batch's."""
        return self.model or default

    def engine_or(self, default: str) -> str:
        return self.engine or default

    def extra_fields(self) -> dict[str, Any]:
        """The manifest fields that ride beside ``options`` and were given."""
        return {
            k: v
            for k, v in (("context", self.context), ("hotwords", self.hotwords))
            if v is not None
        }


_NO_REQUEST = ItemRequest()


@dataclass(frozen=True, slots=True)
class AudioFacts:
    """What preparing the item found and made: its ``probe`` column."""

    probe: Mapping[str, Any] = field(
        default_factory=lambda: _EMPTY
    )  # ProbeResult.as_dict() (models.ProbeResult.from_dict)
    offset_s: float = 0.0  # where the normalized audio starts on the source's timeline
    normalized_s: float = 0.0  # the normalized audio's length
    language: str | None = None  # detected, once transcribed

    @classmethod
    def decode(cls, facts: Mapping[str, Any] | None) -> AudioFacts | None:
        if facts is None:
            return None
        return cls(
            probe=MappingProxyType(dict(facts)),
            offset_s=float(facts.get("offset_s") or 0.0),
            normalized_s=float(facts.get("normalized_s") or 0.0),
            language=_opt_str(facts.get("language")),
        )

    @property
    def duration_s(self) -> float:
        return float(self.probe.get("duration_s") or 0.0)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an item did not succeed (or why its last try did not): kept in ``error_*``.

    ``retryable`` is decided by the exception raised (its branch of the tree), stored beside
    the code, and read back by re-runs: a code alone does not say it (``download_failed``
    is raised both ways).
    """

    code: str  # a FailureCode value
    message: str
    retryable: bool
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def of(cls, exc: BaseException, *, message: str | None = None) -> Failure:
        """The failure to record for any exception (unknown ones are ``internal``)."""
        code, text = failure_of(exc)
        detail = exc.detail if isinstance(exc, PipelineError) else {}
        return cls(
            code.value,
            text if message is None else message,
            is_retryable(exc),
            MappingProxyType(dict(detail)) if detail else _EMPTY,
        )

    @classmethod
    def permanent(cls, code: FailureCode | str, message: str) -> Failure:
        return cls(str(code), message, False)

    @classmethod
    def decode(
        cls,
        code: str | None,
        message: str | None,
        retryable: bool | None,
        detail: Mapping[str, Any] | None,
    ) -> Failure | None:
        if code is None:
            return None
        return cls(
            code,
            message or "",
            # A failure recorded before the ledger kept the flag: the code's nature.
            code_retryable(code) if retryable is None else bool(retryable),
            MappingProxyType(dict(detail)) if detail else _EMPTY,
        )

    def columns(self) -> dict[str, Any]:
        """The item (or attempt) columns that hold it."""
        return {
            "error_code": self.code,
            "error_message": self.message,
            "error_retryable": self.retryable,
            "error_detail": dict(self.detail) or None,
        }
