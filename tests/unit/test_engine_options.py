"""Unit tests for the local engine's options: flags into settings, item options into the model
call, refusals made before any model loads, and the CLI's light commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from support import bare_flow

from pipeline.asr.base import AudioClip
from pipeline.asr.local import LocalEngine
from pipeline.cli.app import engine_settings, main
from pipeline.errors import ConfigError, FailureCode
from pipeline.ledger import ItemRequest
from pipeline.settings import LocalEngineSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("BULKSCRIBE_", "DASHSCOPE_")):
            monkeypatch.delenv(name)


def test_flags_land_in_their_settings_and_keep_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine flags set local.* and subtitles.*; settings they do not name keep env values."""
    defaults = load_settings(**engine_settings())
    assert (defaults.local.beam_size, defaults.local.allow_download) == (5, False)
    assert (defaults.subtitles.max_line_width, defaults.subtitles.max_line_count) == (42, 2)
    monkeypatch.setenv("BULKSCRIBE_LOCAL__COMPUTE_TYPE", "float32")
    monkeypatch.setenv("BULKSCRIBE_LOCAL__ALLOW_DOWNLOAD", "true")
    s = load_settings(
        **engine_settings(
            beam_size=5,
            threads=3,
            vad=False,
            task="translate",
            context="Names.",
            hotwords="Dashwood",
            max_line_width=30,
            max_line_count=1,
        )
    )
    assert (s.local.beam_size, s.local.cpu_threads, s.local.vad_filter, s.local.task) == (
        5,
        3,
        False,
        "translate",
    )
    assert (s.local.context, s.local.hotwords) == ("Names.", "Dashwood")
    assert (s.local.compute_type, s.local.allow_download) == ("float32", True)
    assert (s.subtitles.max_line_width, s.subtitles.max_line_count) == (30, 1)


def test_tsv_is_a_format() -> None:
    """tsv is accepted; an unknown format's message lists it."""
    assert load_settings(formats="srt,tsv").formats == ("srt", "tsv")
    with pytest.raises(ValueError, match="json,txt,srt,vtt,tsv"):
        load_settings(formats="docx")


class FakeWhisper:
    """Stands in for WhisperModel: records what transcribe() was given."""

    def __init__(self, multilingual: bool) -> None:
        self.model = SimpleNamespace(is_multilingual=multilingual)
        self.calls: list[dict[str, Any]] = []

    def transcribe(self, _audio: Any, **kwargs: Any) -> tuple[list[Any], Any]:
        self.calls.append(kwargs)
        return [], SimpleNamespace(language="en")


def engine(multilingual: bool = True, **knobs: Any) -> tuple[LocalEngine, FakeWhisper]:
    eng = LocalEngine("base" if multilingual else "tiny.en", LocalEngineSettings(**knobs))
    fake = FakeWhisper(multilingual)
    eng._model = fake  # type: ignore[assignment]
    return eng, fake


CLIP = AudioClip(np.zeros(16_000, dtype=np.int16))


def test_item_context_and_hotwords_reach_the_model() -> None:
    """An item's context and hotwords (manifest fields, kept in its options) become the
    model's initial_prompt and hotwords, over the run's; the run's fill in when it has none."""
    eng, fake = engine(
        context="Run prompt.", hotwords="run words", beam_size=3, task="translate", vad_filter=False
    )
    ctx = bare_flow(engine="local")
    item = SimpleNamespace(
        request=ItemRequest.decode(
            {"options": {"context": "Item prompt.", "hotwords": "Willoughby"}}
        )
    )
    eng.transcribe(CLIP, ctx.rules.asr_options(item))  # type: ignore[arg-type]
    eng.transcribe(CLIP, ctx.rules.asr_options(SimpleNamespace(request=ItemRequest.decode({}))))  # type: ignore[arg-type]
    top_level = SimpleNamespace(
        request=ItemRequest.decode({"context": "Spec prompt.", "hotwords": "Norland"})
    )
    eng.transcribe(CLIP, ctx.rules.asr_options(top_level))  # type: ignore[arg-type]
    first, second, third = fake.calls
    assert (first["initial_prompt"], first["hotwords"]) == ("Item prompt.", "Willoughby")
    assert (second["initial_prompt"], second["hotwords"]) == ("Run prompt.", "run words")
    assert (third["initial_prompt"], third["hotwords"]) == ("Spec prompt.", "Norland")
    assert (first["beam_size"], first["task"], first["vad_filter"]) == (3, "translate", False)


def test_translate_with_an_english_only_model_is_refused_before_loading() -> None:
    """task=translate on tiny.en is unsupported_option, and no model call is made."""
    eng, fake = engine(multilingual=False, task="translate")
    with pytest.raises(ConfigError) as info:
        eng.transcribe(
            CLIP, bare_flow().rules.asr_options(SimpleNamespace(request=ItemRequest.decode({})))
        )  # type: ignore[arg-type]
    assert info.value.code is FailureCode.UNSUPPORTED_OPTION
    assert "--model base" in info.value.message and fake.calls == []


def test_submit_help_explains_engine_model_and_language() -> None:
    """`submit --help` has a help text for --engine, --model and --language."""
    out = CliRunner().invoke(main, ["submit", "--help"]).output
    flat = " ".join(out.split())
    assert "--engine [local|dashscope] ASR engine" in flat
    assert "--model TEXT tiny.en (default)" in flat
    assert "--language TEXT Language code" in flat


def test_status_and_help_import_only_what_they_use(tmp_path: Path) -> None:
    """`status --out DIR` and `--help` import neither Alembic (the ledger is at head), the
    runner, the model stack, HTTP clients nor Celery."""
    out = tmp_path / "out"
    setup = (
        "import sys; from pathlib import Path; from pipeline.ledger import open_ledger, "
        "sqlite_url; from pipeline.inputs.batches import batch_id_for; out = Path(sys.argv[1]); "
        "(out / '.bulkscribe').mkdir(parents=True); "
        "open_ledger(sqlite_url(out / '.bulkscribe' / 'ledger.db')).ensure_batch("
        "batch_id_for(out), kind='run', out=str(out), engine='local', model='tiny.en')"
    )
    subprocess.run([sys.executable, "-c", setup, str(out)], check=True)
    probe = (
        "import sys, json; from pipeline.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = ('alembic', 'pipeline.runner', 'numpy', 'httpx', 'celery', 'faster_whisper')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    for args in (["status", "--out", str(out), "--json"], ["--help"]):
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True
        )
        assert json.loads(proc.stderr.strip().splitlines()[-1]) == [], (args, proc.stderr)
