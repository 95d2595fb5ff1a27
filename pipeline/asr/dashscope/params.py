"""Request bodies as pure functions: our ``AsrOptions`` in, DashScope's JSON out.

Options map field by field. A feature a model family does not have is refused with
``unsupported_option`` rather than dropped: a user who asked for speakers must not get a
transcript without them and think it worked. ``AsrOptions.extra`` (manifest ``options``)
passes through into ``parameters`` verbatim, as the SDK does with unknown keyword
arguments (§2.3); the typed fields win on a clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.errors import FailureCode, PermanentError
from pipeline.models import AsrOptions

MAX_FILE_URLS = 100  # Fun-ASR, per task (§3.1)
FILETRANS_PREFIX = "qwen3-asr-flash-filetrans"
_FUNASR_PREFIXES = ("fun-asr", "paraformer", "sensevoice")

# qwen3-omni-flash is a general audio model: it has to be told to transcribe, and told not
# to summarise, translate or answer what it hears.
OMNI_PROMPT = (
    "Transcribe this audio verbatim, in the language that is spoken. Output only the "
    "transcript text, with punctuation; no translation, summary, labels or commentary."
)


def is_filetrans(model: str) -> bool:
    return model.lower().startswith(FILETRANS_PREFIX)


def is_funasr(model: str) -> bool:
    return model.lower().startswith(_FUNASR_PREFIXES)


def is_omni(model: str) -> bool:
    return "omni" in model.lower()


def unsupported(option: str, model: str, hint: str = "") -> PermanentError:
    return PermanentError(
        FailureCode.UNSUPPORTED_OPTION, f"{option} is not supported by {model}{hint}"
    )


def refuse_funasr_only(options: AsrOptions, model: str) -> None:
    """Diarization and hotword vocabularies exist only in the Fun-ASR/Paraformer family."""
    hint = "; use fun-asr or paraformer-v2 for it"
    if options.diarization:
        raise unsupported("speaker diarization", model, hint)
    if options.vocabulary_id:
        raise unsupported("vocabulary_id (hotwords)", model, hint)


def funasr_parameters(
    options: AsrOptions, *, channels: Sequence[int] | None = None
) -> dict[str, Any]:
    """``parameters`` for Fun-ASR / Paraformer; only what was asked for is sent."""
    params: dict[str, Any] = dict(options.extra)
    if options.language:
        params["language_hints"] = [options.language]
    if options.vocabulary_id:
        params["vocabulary_id"] = options.vocabulary_id
    if options.diarization:
        params["diarization_enabled"] = True
        if options.speaker_count is not None:
            if not 2 <= options.speaker_count <= 100:
                raise PermanentError(
                    FailureCode.UNSUPPORTED_OPTION,
                    f"speaker_count must be 2..100, not {options.speaker_count}",
                )
            params["speaker_count"] = options.speaker_count
    if channels is not None:
        params["channel_id"] = list(channels)
    return params


def filetrans_parameters(
    options: AsrOptions, *, model: str = FILETRANS_PREFIX, channels: Sequence[int] | None = None
) -> dict[str, Any]:
    """``parameters`` for qwen3-asr-flash-filetrans (§3.2)."""
    refuse_funasr_only(options, model)
    params: dict[str, Any] = dict(options.extra)
    if options.language:
        params["language"] = options.language
    params["enable_itn"] = options.itn
    params["enable_words"] = options.words
    if channels is not None:
        params["channel_id"] = list(channels)
    return params


def submit_parameters(
    model: str, options: AsrOptions, *, channels: Sequence[int] | None = None
) -> dict[str, Any]:
    """The right ``parameters`` for any async model."""
    if is_filetrans(model):
        return filetrans_parameters(options, model=model, channels=channels)
    if is_funasr(model):
        return funasr_parameters(options, channels=channels)
    raise PermanentError(
        FailureCode.CONFIG_INVALID, f"{model} is not an async file-transcription model"
    )


def submit_body(model: str, file_urls: Sequence[str], parameters: dict[str, Any]) -> dict[str, Any]:
    """E1's body; filetrans takes exactly one ``file_url``, Fun-ASR up to 100 ``file_urls``."""
    urls = list(file_urls)
    if is_filetrans(model):
        if len(urls) != 1:
            raise PermanentError(
                FailureCode.CONFIG_INVALID,
                f"{model} takes exactly one file per task, got {len(urls)}",
            )
        task_input: dict[str, Any] = {"file_url": urls[0]}
    else:
        if not 1 <= len(urls) <= MAX_FILE_URLS:
            raise PermanentError(
                FailureCode.CONFIG_INVALID,
                f"{model} takes 1..{MAX_FILE_URLS} files per task, got {len(urls)}",
            )
        task_input = {"file_urls": urls}
    return {"model": model, "input": task_input, "parameters": dict(parameters)}


def native_body(
    model: str,
    audio: str,
    *,
    language: str | None,
    enable_itn: bool,
    context: str | None,
    stream: bool,
) -> dict[str, Any]:
    """E4's body for qwen3-asr-flash (§4)."""
    messages: list[dict[str, Any]] = []
    if context:
        messages.append({"role": "system", "content": [{"text": context}]})
    messages.append({"role": "user", "content": [{"audio": audio}]})
    asr_options: dict[str, Any] = {"enable_itn": enable_itn}
    if language:
        asr_options["language"] = language
    parameters: dict[str, Any] = {"asr_options": asr_options, "result_format": "message"}
    if stream:
        parameters["incremental_output"] = True  # pieces, concatenated by us
    return {"model": model, "input": {"messages": messages}, "parameters": parameters}


def chat_body(
    model: str,
    audio_data: str,
    *,
    language: str | None,
    context: str | None,
    stream: bool,
    fmt: str,
) -> dict[str, Any]:
    """E5's body: qwen3-asr-flash (§5.1) or, always streaming, qwen3-omni-flash (§5.2)."""
    omni = is_omni(model)
    messages: list[dict[str, Any]] = []
    if context:
        messages.append({"role": "system", "content": [{"type": "text", "text": context}]})
    user: list[dict[str, Any]] = [
        {"type": "input_audio", "input_audio": {"data": audio_data, "format": fmt}}
    ]
    if omni:
        prompt = OMNI_PROMPT + (f" The language is {language}." if language else "")
        user.append({"type": "text", "text": prompt})
    messages.append({"role": "user", "content": user})
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream or omni}
    if omni:
        body["modalities"] = ["text"]
    elif language:
        body["asr_options"] = {"language": language}
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    return body
