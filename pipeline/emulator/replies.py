"""Answers to sync recognition calls: native multimodal-generation and OpenAI chat completions.

Pure builders from the recognised text to response bodies and SSE event strings (§2.6, §4,
§5). Streams are cut from the finished transcript (a few words per event), so incremental
and cumulative modes, ``event:error`` and ``data: [DONE]`` behave as the SDKs expect.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

AUDIO_TOKENS_PER_S = 25  # Qwen audio encoders emit 25 tokens a second [INF]


@dataclass(frozen=True, slots=True)
class Recognized:
    """What a sync call recognised, ready to be phrased for either dialect."""

    text: str
    language: str
    duration_s: float

    @property
    def annotations(self) -> list[dict[str, str]]:
        return [{"type": "audio_info", "language": self.language, "emotion": "neutral"}]

    @property
    def audio_tokens(self) -> int:
        return math.ceil(self.duration_s * AUDIO_TOKENS_PER_S)

    @property
    def text_tokens(self) -> int:
        return len(re.findall(r"\w+|[^\w\s]", self.text))


def pieces(text: str, words: int = 3) -> list[str]:
    """Cut text into stream pieces of a few words; ``"".join(pieces(t)) == t``."""
    tokens = re.findall(r"\s*\S+\s*", text) if re.search(r"\s", text.strip()) else list(text)
    if not tokens:
        return [text] if text else []
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- native: POST /api/v1/services/aigc/multimodal-generation/generation -------------------


def native_usage(r: Recognized) -> dict[str, Any]:
    return {
        "input_tokens_details": {"text_tokens": 0},
        "output_tokens_details": {"text_tokens": r.text_tokens},
        "input_tokens": r.audio_tokens,
        "output_tokens": r.text_tokens,
        "seconds": math.ceil(r.duration_s),
    }


def _native_choice(
    text: str, finish: str, annotations: list[dict[str, str]] | None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": [{"text": text}]}
    if annotations is not None:
        message["annotations"] = annotations
    return {"finish_reason": finish, "message": message}


def native_body(r: Recognized, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "output": {"choices": [_native_choice(r.text, "stop", r.annotations)]},
        "usage": native_usage(r),
    }


def native_events(r: Recognized, request_id: str, *, incremental: bool) -> Iterator[str]:
    """SSE events; intermediate ``finish_reason`` is the string "null" as on the service."""
    parts = pieces(r.text) or [""]
    sent = ""
    for i, part in enumerate(parts, start=1):
        sent += part
        last = i == len(parts)
        data = {
            "output": {
                "choices": [
                    _native_choice(
                        part if incremental else sent,
                        "stop" if last else "null",
                        r.annotations if last else None,
                    )
                ]
            },
            "usage": native_usage(r),
            "request_id": request_id,
        }
        yield f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{_dumps(data)}\n\n"


def native_error_event(status: int, body: dict[str, Any]) -> str:
    """An error as an SSE event: ``event:error`` with no space, or the SDK misses it (§2.6)."""
    return f"id:1\nevent:error\nstatus:{status}\n:HTTP_STATUS/{status}\ndata:{_dumps(body)}\n\n"


# --- compatible mode: POST /compatible-mode/v1/chat/completions ------------------------------


def compat_usage(r: Recognized) -> dict[str, Any]:
    return {
        "prompt_tokens": r.audio_tokens,
        "completion_tokens": r.text_tokens,
        "total_tokens": r.audio_tokens + r.text_tokens,
        "prompt_tokens_details": {"audio_tokens": r.audio_tokens, "text_tokens": 0},
        "completion_tokens_details": {"text_tokens": r.text_tokens},
        "seconds": math.ceil(r.duration_s),
    }


def completion_body(
    r: Recognized, *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": r.text, "annotations": r.annotations},
            }
        ],
        "usage": compat_usage(r),
    }


def completion_chunks(
    r: Recognized, *, completion_id: str, created: int, model: str, include_usage: bool
) -> Iterator[str]:
    """``data: {chunk}`` lines, the usage chunk if asked for, then ``data: [DONE]``."""
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    parts = pieces(r.text) or [""]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        delta: dict[str, Any] = {"content": part}
        if i == 0:
            delta = {"role": "assistant", **delta}
        if last:
            delta["annotations"] = r.annotations
        chunk = {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if last else None,
                }
            ],
        }
        yield f"data: {_dumps(chunk)}\n\n"
    if include_usage:
        yield f"data: {_dumps({**head, 'choices': [], 'usage': compat_usage(r)})}\n\n"
    yield "data: [DONE]\n\n"
