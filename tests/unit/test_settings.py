"""Unit tests for pipeline.settings: flags > env > TOML > defaults, nested env, the API key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import ConfigFileMissing, Settings, load_settings

KEY = "sk-0123456789abcdefSECRET"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no BULKSCRIBE_* or DASHSCOPE_* variables from the caller."""
    import os

    for name in list(os.environ):
        if name.startswith(("BULKSCRIBE_", "DASHSCOPE_")):
            monkeypatch.delenv(name)


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "bulkscribe.toml"
    path.write_text(
        'model = "base"\nworkers = 3\nlanguage = "de"\nformats = ["json", "srt"]\n'
        "[local]\nbeam_size = 3\nwindow_s = 60\n[retry]\nmax_attempts = 7\n"
    )
    return path


def test_defaults() -> None:
    """With nothing set, the documented defaults apply."""
    s = load_settings(None)
    assert (s.engine, s.model, s.language, s.workers) == ("local", "tiny.en", None, 2)
    assert s.formats == ("json", "txt", "srt", "vtt")
    assert (s.local.beam_size, s.local.window_s, s.retry.max_attempts) == (5, 300.0, 4)
    assert s.dashscope_api_key is None


def test_toml_over_defaults(toml: Path) -> None:
    """A TOML file sets top-level and nested values; the rest keep their defaults."""
    s = load_settings(toml)
    assert (s.model, s.workers, s.language, s.formats) == ("base", 3, "de", ("json", "srt"))
    assert (s.local.beam_size, s.local.window_s, s.local.vad_filter) == (3, 60.0, True)
    assert (s.retry.max_attempts, s.retry.backoff_base_s) == (7, 2.0)


def test_env_over_toml_field_by_field_in_nested_groups(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BULKSCRIBE_LOCAL__BEAM_SIZE beats the TOML's beam_size but keeps its window_s."""
    monkeypatch.setenv("BULKSCRIBE_WORKERS", "5")
    monkeypatch.setenv("BULKSCRIBE_LOCAL__BEAM_SIZE", "4")
    s = load_settings(toml)
    assert (s.workers, s.model) == (5, "base")
    assert (s.local.beam_size, s.local.window_s) == (4, 60.0)


def test_flags_over_env_over_toml(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag wins over env and TOML; a flag given as None does not erase anything."""
    monkeypatch.setenv("BULKSCRIBE_WORKERS", "5")
    monkeypatch.setenv("BULKSCRIBE_LANGUAGE", "fr")
    s = load_settings(toml, workers=9, language=None, model="tiny.en", formats="vtt,txt,vtt")
    assert (s.workers, s.language, s.model, s.formats) == (9, "fr", "tiny.en", ("vtt", "txt"))


def test_config_from_env_variable(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BULKSCRIBE_CONFIG names the TOML file when no --config is given."""
    monkeypatch.setenv("BULKSCRIBE_CONFIG", str(toml))
    assert load_settings(None).model == "base"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    """A --config path that does not exist raises ConfigFileMissing naming it."""
    with pytest.raises(ConfigFileMissing, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("env", "value"), [("BULKSCRIBE_LOCAL__WINDOW_S", "5"), ("BULKSCRIBE_WORKERS", "0")]
)
def test_invalid_env_values_are_rejected(
    env: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out-of-range numbers from the environment fail validation instead of being used."""
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError):
        load_settings(None)


def test_unknown_format_flag_is_named() -> None:
    """--formats with an unknown format fails validation, naming it and the choices."""
    with pytest.raises(ValidationError, match=r"unknown format.*docx.*json,txt,srt,vtt"):
        load_settings(None, formats="json,docx")


def test_formats_env_takes_the_same_comma_list_as_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """BULKSCRIBE_FORMATS=json,srt means what --formats json,srt means."""
    monkeypatch.setenv("BULKSCRIBE_FORMATS", "json,srt")
    assert load_settings(None).formats == ("json", "srt")


def test_unknown_format_in_env_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """BULKSCRIBE_FORMATS with an unknown format fails validation like the flag does."""
    monkeypatch.setenv("BULKSCRIBE_FORMATS", "json,docx")
    with pytest.raises(ValidationError, match="docx"):
        load_settings(None)


def test_dashscope_key_is_read_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """DASHSCOPE_API_KEY is read as DashScope's SDK does, and neither repr nor str shows it."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    s = load_settings(None)
    assert s.dashscope_api_key is not None
    assert s.dashscope_api_key.get_secret_value() == KEY
    for text in (repr(s), str(s), repr(s.dashscope_api_key), s.model_dump_json()):
        assert KEY not in text and "SECRET" not in text


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after they are built."""
    s = Settings()
    with pytest.raises(ValidationError):
        s.workers = 8  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.local.beam_size = 5  # type: ignore[misc]
