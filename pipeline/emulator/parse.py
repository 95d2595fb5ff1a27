"""Request bodies in, frozen requests out, or the :class:`ApiError` the service would answer.

Validation is synchronous like the service's (§3.1): a bad model, missing input or a wrong
type is refused at once; whether a file downloads or decodes is only learned later.
Parameters the emulator cannot honour (vocabulary_id, enable_itn, special_word_filter, ...)
are accepted and ignored, as the service accepts unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.emulator.catalog import ASYNC_FAMILIES, SYNC_FAMILIES, Family, family_of
from pipeline.emulator.errors import (
    BAD_OSS_URL,
    MODEL_NOT_EXIST,
    STREAM_ONLY,
    ApiError,
    invalid,
)
from pipeline.emulator.tasks import JobOptions


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    model: str
    family: Family
    file_urls: tuple[str, ...]
    options: JobOptions


@dataclass(frozen=True, slots=True)
class SyncRequest:
    model: str
    family: Family
    audio: str
    options: JobOptions
    stream: bool = False
    incremental: bool = False
    include_usage: bool = False


def _model(body: Mapping[str, Any], families: frozenset[Family]) -> tuple[str, Family]:
    model = body.get("model")
    if not model:
        raise ApiError(
            400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.'
        )
    family = family_of(model)
    if family not in families:
        raise invalid(MODEL_NOT_EXIST)
    assert family is not None
    return str(model), family


def _empty_input() -> ApiError:
    return ApiError(400, "BadRequest.EmptyInput", "Required input parameter missing from request.")


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"{name} must be an object.")
    return value


def _channels(params: Mapping[str, Any]) -> tuple[int, ...]:
    raw = params.get("channel_id", [0])
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in raw)
    ):
        raise invalid("channel_id must be a non-empty list of non-negative integers.")
    return tuple(dict.fromkeys(raw))


def _first_str(values: Any) -> str | None:
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None


def _check_oss(url: str, oss_resolve: bool) -> None:
    if url.startswith("oss://") and not oss_resolve:
        raise invalid(BAD_OSS_URL)


def parse_submit(body: Any, *, oss_resolve: bool, max_files: int) -> SubmitRequest:
    """E1: Fun-ASR/Paraformer take ``input.file_urls``, filetrans takes ``input.file_url``."""
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model, family = _model(body, ASYNC_FAMILIES)
    inp = body.get("input")
    if not isinstance(inp, Mapping) or not inp:
        raise _empty_input()
    params = _object(body.get("parameters"), "parameters")
    if family is Family.FILE_URLS:
        urls = inp.get("file_urls")
        if (
            not isinstance(urls, list)
            or not urls
            or not all(isinstance(u, str) and u for u in urls)
        ):
            raise invalid("input.file_urls must be a non-empty list of URLs.")
        if len(urls) > max_files:
            raise invalid(
                f"input.file_urls holds {len(urls)} URLs; at most {max_files} are allowed."
            )
        hints = params.get("language_hints")
        language = _first_str(hints)
    else:
        url = inp.get("file_url")
        if not isinstance(url, str) or not url:
            raise invalid("input.file_url must be a URL.")
        urls = [url]
        if params.get("diarization_enabled"):
            raise invalid(f"diarization_enabled is not supported by model {model}.")
        language = params.get("language") if isinstance(params.get("language"), str) else None
    for url in urls:
        _check_oss(url, oss_resolve)
    options = JobOptions(
        channels=_channels(params),
        language=language,
        diarization=bool(params.get("diarization_enabled")) and family is Family.FILE_URLS,
        enable_words=family is Family.FILE_URLS or bool(params.get("enable_words")),
    )
    return SubmitRequest(model, family, tuple(urls), options)


def _text_of(content: Any) -> str | None:
    """System-message text: a string, or a list of ``{"text"}`` / ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, Mapping)]
        joined = " ".join(t for t in texts if isinstance(t, str) and t)
        return joined or None
    return None


def parse_multimodal(body: Any, *, stream: bool, oss_resolve: bool) -> SyncRequest:
    """E4: ``input.messages`` with one ``{"audio": ...}`` element; options in ``asr_options``."""
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model, family = _model(body, SYNC_FAMILIES)
    inp = _object(body.get("input"), "input")
    messages = inp.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _empty_input()
    params = _object(body.get("parameters"), "parameters")
    if family is Family.OMNI and not stream:
        raise invalid(STREAM_ONLY)
    audio, context = None, None
    for msg in messages:
        if not isinstance(msg, Mapping):
            raise invalid("Each message must be an object.")
        if msg.get("role") == "system":
            context = _text_of(msg.get("content"))
        elif msg.get("role") == "user" and isinstance(msg.get("content"), list):
            audio = audio or next(
                (
                    p["audio"]
                    for p in msg["content"]
                    if isinstance(p, Mapping) and isinstance(p.get("audio"), str) and p["audio"]
                ),
                None,
            )
    if audio is None:
        raise invalid("The user message must contain an audio element.")
    _check_oss(audio, oss_resolve)
    asr = _object(params.get("asr_options"), "asr_options")
    language = asr.get("language") if isinstance(asr.get("language"), str) else None
    return SyncRequest(
        model,
        family,
        audio,
        JobOptions(language=language, context=context),
        stream=stream,
        incremental=bool(params.get("incremental_output")),
    )


def _input_audio(part: Any) -> str | None:
    """The ``data`` of an OpenAI ``{"type": "input_audio", "input_audio": {...}}`` part."""
    inner = part.get("input_audio") if isinstance(part, Mapping) else None
    data = inner.get("data") if isinstance(inner, Mapping) else None
    return data if isinstance(data, str) and data else None


def parse_chat(body: Any, *, oss_resolve: bool) -> SyncRequest:
    """E5: OpenAI messages with an ``input_audio`` part; ``asr_options`` at the top level."""
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not model:
        raise invalid("you must provide a model parameter")
    family = family_of(model)
    if family not in SYNC_FAMILIES:
        raise ApiError(
            404,
            "ModelNotFound",
            f"The model `{model}` does not exist or you do not have access to it.",
        )
    assert family is not None
    stream = bool(body.get("stream"))
    if family is Family.OMNI and not stream:
        raise invalid(STREAM_ONLY)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list.")
    audio, context = None, None
    for msg in messages:
        if not isinstance(msg, Mapping):
            raise invalid("Each message must be an object.")
        if msg.get("role") == "system":
            context = _text_of(msg.get("content"))
        elif msg.get("role") == "user" and isinstance(msg.get("content"), list):
            for part in msg["content"]:
                audio = audio or _input_audio(part)
    if audio is None:
        raise invalid("The user message must contain an input_audio part.")
    _check_oss(audio, oss_resolve)
    asr = _object(body.get("asr_options"), "asr_options")
    language = asr.get("language") if isinstance(asr.get("language"), str) else None
    include_usage = stream and bool(
        _object(body.get("stream_options"), "stream_options").get("include_usage")
    )
    return SyncRequest(
        str(model),
        family,
        audio,
        JobOptions(language=language, context=context),
        stream=stream,
        include_usage=include_usage,
    )
