"""Unit tests for pipeline.asr.weights: hash pinning and model name resolution, on small fakes."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from pipeline.asr.weights import english_only, resolve_model, sha256_file, verify_dir
from pipeline.errors import ConfigError, FailureCode

FILES = {
    "model.bin": b"\x00\x01fake ctranslate2 weights" * 100,
    "config.json": b'{"a": 1}\n',
    "vocabulary.txt": b"hello\nworld\n",
}


@pytest.fixture
def model_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory of small fake model files, and their SHA-256 pins."""
    d = tmp_path / "model"
    d.mkdir()
    pins = {}
    for name, data in FILES.items():
        (d / name).write_bytes(data)
        pins[name] = hashlib.sha256(data).hexdigest()
    return d, pins


def test_sha256_file_matches_hashlib(model_dir: tuple[Path, dict[str, str]]) -> None:
    """sha256_file reads in chunks and gives hashlib's digest."""
    d, pins = model_dir
    assert sha256_file(d / "model.bin", chunk=7) == pins["model.bin"]


def test_untouched_files_verify(model_dir: tuple[Path, dict[str, str]]) -> None:
    """Files that match their pins pass, twice (the second time from the per-process cache)."""
    d, pins = model_dir
    verify_dir(d, pins)
    verify_dir(d, pins)


def test_tampered_file_is_refused(model_dir: tuple[Path, dict[str, str]]) -> None:
    """One flipped byte in model.bin is model_unavailable, naming the file and both hashes."""
    d, pins = model_dir
    verify_dir(d, pins)  # cached as good before the change
    data = bytearray(FILES["model.bin"])
    data[100] ^= 0xFF
    (d / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ConfigError) as info:
        verify_dir(d, pins)
    assert info.value.code is FailureCode.MODEL_UNAVAILABLE
    msg = info.value.message
    assert str(d / "model.bin") in msg and pins["model.bin"] in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg


def test_missing_pinned_file_is_refused(model_dir: tuple[Path, dict[str, str]]) -> None:
    """A pinned file that is absent is model_unavailable, naming it."""
    d, pins = model_dir
    (d / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"config\.json is missing") as info:
        verify_dir(d, pins)
    assert info.value.code is FailureCode.MODEL_UNAVAILABLE


def test_model_directory_resolves_to_a_local_ref(model_dir: tuple[Path, dict[str, str]]) -> None:
    """--model DIR with a model.bin loads from that directory, never from the hub."""
    d, _ = model_dir
    ref = resolve_model(str(d))
    assert (ref.location, ref.local_only) == (str(d.resolve()), True)


def test_directory_without_model_bin_is_refused(tmp_path: Path) -> None:
    """--model DIR without model.bin is model_unavailable, naming the directory."""
    with pytest.raises(ConfigError, match=r"has no model\.bin") as info:
        resolve_model(str(tmp_path))
    assert info.value.code is FailureCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize("name", ["./missing-model", "/no/such/model"])
def test_missing_directory_is_refused(name: str) -> None:
    """A path-like --model that does not exist is model_unavailable."""
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(name)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to resolve a host or open a connection is recorded and refused.

    HF_HUB_OFFLINE is unset, so only bulkscribe's own decision keeps the hub away.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network use in a unit test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_hub_name_not_in_the_cache_is_refused_offline(
    no_network: list[object], tmp_path: Path
) -> None:
    """small.en, not in the download cache, is model_unavailable before any connection is tried,
    and the message says how to get it."""
    with pytest.raises(ConfigError) as info:
        resolve_model("small.en", cache_dir=tmp_path)
    assert info.value.code is FailureCode.MODEL_UNAVAILABLE
    assert "BULKSCRIBE_LOCAL__ALLOW_DOWNLOAD=true" in info.value.message
    assert "\n" not in info.value.message
    assert no_network == []


def test_hub_name_in_the_cache_loads_from_it(no_network: list[object], tmp_path: Path) -> None:
    """A hub model already in the download cache resolves to its snapshot, loaded offline."""
    repo = tmp_path / "models--Systran--faster-whisper-small.en"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for name, data in FILES.items():
        (snapshot / name).write_bytes(data)
    ref = resolve_model("small.en", cache_dir=tmp_path)
    assert (Path(ref.location), ref.local_only) == (snapshot, True)
    assert no_network == []


def test_hub_name_with_downloads_allowed_is_passed_through(
    no_network: list[object], tmp_path: Path
) -> None:
    """With local.allow_download the name goes to faster-whisper, which may download it."""
    ref = resolve_model("small.en", cache_dir=tmp_path, allow_download=True)
    assert (ref.location, ref.local_only) == ("small.en", False)
    assert no_network == []


def test_unknown_name_is_refused(no_network: list[object], tmp_path: Path) -> None:
    """A name that is no faster-whisper size, hub id or directory is model_unavailable."""
    with pytest.raises(ConfigError, match="unknown model 'smal'") as info:
        resolve_model("smal", cache_dir=tmp_path)
    assert info.value.code is FailureCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize(
    ("name", "english"),
    [
        ("tiny.en", True),
        ("small.en", True),
        ("base", False),
        ("/models/medium.en/", True),
        ("Systran/faster-whisper-large-v3", False),
    ],
)
def test_english_only_names(name: str, english: bool) -> None:
    """Whisper's English-only checkpoints are the *.en ones, by name or directory."""
    assert english_only(name) is english
