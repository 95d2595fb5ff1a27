"""Reading the sync models' answers: native (§4) and OpenAI-compatible (§5), JSON or SSE.

Pure functions from a decoded body (or a sequence of :class:`SseEvent`) to a
:class:`SyncResult`. Streams are requested incrementally, so the text is the concatenation of
every event's piece. A stream that ends before the model said it was finished is an error
(provider_bad_response): a cut-off transcript must not pass for a whole one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pipeline.asr.dashscope.sse import SseEvent
from pipeline.asr.dashscope.wire import bad_response, in_band_error


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync recognition returned: plain text, no timestamps."""

    text: str
    language: str | None = None
    emotion: str | None = None
    request_id: str | None = None
    usage: Mapping[str, Any] | None = None


class _Collector:
    """Accumulates pieces, annotations and usage across a response or a stream."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.language: str | None = None
        self.emotion: str | None = None
        self.request_id: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self.finished = False

    def choice(self, choice: Any, message_key: str) -> None:
        if not isinstance(choice, Mapping):
            raise bad_response(f"choice is not an object: {choice!r:.80}")
        message = choice.get(message_key) or {}
        if not isinstance(message, Mapping):
            raise bad_response(f"choices[].{message_key} is not an object")
        self.pieces.append(_text_of(message.get("content")))
        for note in message.get("annotations") or ():
            if isinstance(note, Mapping) and note.get("type", "audio_info") == "audio_info":
                self.language = note.get("language") or self.language
                self.emotion = note.get("emotion") or self.emotion
        if choice.get("finish_reason") not in (None, "", "null"):
            self.finished = True

    def envelope(self, body: Mapping[str, Any]) -> None:
        self.request_id = body.get("request_id") or body.get("id") or self.request_id
        if isinstance(body.get("usage"), Mapping):
            self.usage = MappingProxyType(dict(body["usage"]))

    def result(self) -> SyncResult:
        return SyncResult(
            "".join(self.pieces).strip(), self.language, self.emotion, self.request_id, self.usage
        )


def native_result(body: Mapping[str, Any]) -> SyncResult:
    """A non-streaming ``multimodal-generation`` answer."""
    out = _Collector()
    out.envelope(body)
    out.choice(_first_choice(_native_output(body, out.request_id), out.request_id), "message")
    return out.result()


def native_stream_result(events: Iterable[SseEvent]) -> SyncResult:
    """A native SSE stream with ``incremental_output: true``: pieces are concatenated."""
    out = _Collector()
    for event in events:
        if event.event.strip() == "done" or not (event.data or event.is_error):
            continue
        body = _event_json(event) if event.data else {}
        if event.is_error or body.get("code"):  # §9: a truthy code is an error, event or not
            raise in_band_error(body, event.status)
        out.envelope(body)
        choices = _native_output(body, out.request_id).get("choices") or ()
        for choice in choices[:1]:
            out.choice(choice, "message")
    if not out.finished:
        raise bad_response(
            "native stream ended without finish_reason (truncated)", request_id=out.request_id
        )
    return out.result()


def compat_result(body: Mapping[str, Any]) -> SyncResult:
    """A non-streaming ``chat.completion``."""
    out = _Collector()
    out.envelope(body)
    out.choice(_first_choice(body, out.request_id), "message")
    return out.result()


def compat_stream_result(events: Iterable[SseEvent]) -> SyncResult:
    """``chat.completion.chunk`` events up to ``data: [DONE]``.

    Complete means ``[DONE]`` arrived or a chunk carried a ``finish_reason``: after a
    finish_reason only the optional usage chunk can be lost, never text.
    """
    out = _Collector()
    done = False
    for event in events:
        if event.data.strip() == "[DONE]":
            done = True
            break
        body = _event_json(event)
        if event.is_error or body.get("error") or body.get("code"):
            raise in_band_error(body, event.status)
        out.envelope(body)
        for choice in (body.get("choices") or ())[:1]:
            out.choice(choice, "delta")
    if not (done or out.finished):
        raise bad_response(
            "compatible-mode stream ended without [DONE] (truncated)", request_id=out.request_id
        )
    return out.result()


def _native_output(body: Mapping[str, Any], request_id: str | None) -> Mapping[str, Any]:
    output = body.get("output")
    if not isinstance(output, Mapping):
        raise bad_response("no 'output' object", request_id=request_id)
    return output


def _first_choice(container: Mapping[str, Any], request_id: str | None) -> Any:
    choices = container.get("choices")
    if not isinstance(choices, list) or not choices:
        raise bad_response("no 'choices'", request_id=request_id)
    return choices[0]


def _event_json(event: SseEvent) -> dict[str, Any]:
    try:
        body = json.loads(event.data)
    except ValueError:
        raise bad_response(f"SSE data is not JSON: {event.data[:80]!r}") from None
    if not isinstance(body, dict):
        raise bad_response("SSE data is not a JSON object")
    return body


def _text_of(content: Any) -> str:
    """``content`` as a string (compat) or a list of ``{"text": ...}`` parts (native)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    raise bad_response(f"unexpected message content: {content!r:.80}")
