"""Which DashScope model names the emulator answers to, and through which API.

Names are from the protocol notes (§3.1, §3.2, §4, §5.2); every one is served by the same
local engine. An unknown name gets the service's own "Model not exist." answer.
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    FILE_URLS = "file_urls"  # Fun-ASR / Paraformer: async, input.file_urls, 1..100 files
    FILETRANS = "filetrans"  # qwen3-asr-flash-filetrans: async, input.file_url
    SYNC_ASR = "sync_asr"  # qwen3-asr-flash: sync, native and compatible mode
    OMNI = "omni"  # qwen3-omni-flash: compatible mode, stream only


_MODELS: dict[str, Family] = {
    **dict.fromkeys(
        (
            "fun-asr",
            "fun-asr-2025-11-07",
            "fun-asr-2025-08-25",
            "fun-asr-mtl",
            "fun-asr-mtl-2025-08-25",
            "paraformer-v2",
            "paraformer-8k-v2",
            "paraformer-v1",
            "paraformer-8k-v1",
            "paraformer-mtl-v1",
            "sensevoice-v1",
        ),
        Family.FILE_URLS,
    ),
    **dict.fromkeys(
        ("qwen3-asr-flash-filetrans", "qwen3-asr-flash-filetrans-2025-11-17"), Family.FILETRANS
    ),
    **dict.fromkeys(
        (
            "qwen3-asr-flash",
            "qwen3-asr-flash-2026-02-10",
            "qwen3-asr-flash-2025-09-08",
            "qwen3-asr-flash-us",
        ),
        Family.SYNC_ASR,
    ),
    # Dated omni snapshots are a guess [INF]; the alias is documented.
    **dict.fromkeys(
        ("qwen3-omni-flash", "qwen3-omni-flash-2025-12-01", "qwen3-omni-flash-2025-09-15"),
        Family.OMNI,
    ),
}

ASYNC_FAMILIES = frozenset({Family.FILE_URLS, Family.FILETRANS})
SYNC_FAMILIES = frozenset({Family.SYNC_ASR, Family.OMNI})


def family_of(model: object) -> Family | None:
    """The API family of a model name, or None for names the service would not know."""
    return _MODELS.get(model) if isinstance(model, str) else None


def known_models() -> list[str]:
    return sorted(_MODELS)
