"""Unit tests for INPUTs: sniffing, the directory walk, id rules, strictness and option checks."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import pytest

from pipeline.inputs.batches import seeds_for
from pipeline.inputs.classify import ManifestUnreadable, classify
from pipeline.inputs.ids import MAX_ID_BYTES, MAX_PART_BYTES, derive_id, id_error, source_parts
from pipeline.inputs.manifest import (
    MAX_LINE_BYTES,
    MAX_OPTIONS_BYTES,
    entries_from_sources,
    load_inputs,
    load_manifest,
)
from pipeline.models import ManifestItem
from pipeline.outputs.render import FORMATS


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"\0\0" * 160)
    return path


# --- sniffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("a.wav", b"RIFF\0\0", "media"),
        ("A.MP3", "not really audio\n", "media"),  # a media extension: one item, probe decides
        ("meeting.txt", b"RIFF\x24\x08\0\0WAVEfmt ", "media"),  # a recording named .txt
        ("blob.bin", bytes(range(256)) * 4, "media"),
        ("noise.list", os.urandom(2048).replace(b"\0", b"\1"), "media"),  # no NUL, not text
        ("m.jsonl", '{"source": "a.wav"}\n', "jsonl"),
        ("m.in", b'\xef\xbb\xbf{"source": "a.wav"}\n', "jsonl"),  # BOM, sniffed
        ("m.txt", b"caf\xe9.wav\nb.wav\n", "list"),  # a Latin-1 name stays a list
        ("m.csv", "source\na.wav\n", "csv"),
        ("empty", "", "list"),
    ],
)
def test_classify_by_content(tmp_path: Path, name: str, data: str | bytes, kind: str) -> None:
    """An INPUT is media by extension or by binary content, otherwise a manifest."""
    assert classify(write(tmp_path / name, data)).kind == kind


def test_classify_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    """FIFOs, devices, missing paths and binary files forced to a text format are refused,
    naming the path and what it is, without blocking on the FIFO."""
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(ManifestUnreadable, match=r"pipe\.jsonl: it is a FIFO"):
        classify(tmp_path / "pipe.jsonl")
    with pytest.raises(ManifestUnreadable, match="/dev/zero: it is a character device"):
        classify("/dev/zero")
    with pytest.raises(ManifestUnreadable, match=r"nope\.wav: No such file"):
        classify(tmp_path / "nope.wav")
    blob = write(tmp_path / "x.txt", b"\0\1\2")
    with pytest.raises(ManifestUnreadable, match="binary"):
        classify(blob, "list")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ManifestUnreadable, match="loop"):
        classify(tmp_path / "loop")


def test_manifest_size_cap(tmp_path: Path) -> None:
    """A manifest over max_bytes is refused before it is read; media files are not capped."""
    p = write(tmp_path / "m.txt", "a.wav\n" * 100)
    with pytest.raises(ManifestUnreadable, match=r"over manifest\.max_bytes"):
        load_manifest(p, max_bytes=599)
    assert len(load_manifest(p, max_bytes=600).entries) == 100
    assert classify(wav(tmp_path / "big.wav"), max_bytes=10).kind == "media"


def test_overlong_line_fails_alone(tmp_path: Path) -> None:
    """A line over 64 KiB is manifest_invalid on its own and the next line still loads."""
    big = json.dumps({"source": "a.wav", "note": "x" * MAX_LINE_BYTES})
    p = write(tmp_path / "m.jsonl", big + '\n{"source": "b.wav"}\n')
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["b"]
    assert m.problems[0].message == "line 1: longer than the limit of 64 KiB"


def test_deep_nesting_and_big_options_fail_their_line(tmp_path: Path) -> None:
    """JSON nested 1,000 deep, options nested past 32 levels and options over 16 KiB each
    fail their own line as manifest_invalid; the batch goes on."""
    deep = '{"source": "a.wav", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    nested = '{"source": "b.wav", "x": ' + "[" * 40 + "1" + "]" * 40 + "}"
    big = json.dumps({"source": "c.wav", "x": "y" * MAX_OPTIONS_BYTES})
    p = write(tmp_path / "m.jsonl", "\n".join([deep, nested, big, '{"source": "d.wav"}']))
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["d"]
    assert [x.code for x in m.problems] == ["manifest_invalid"] * 3
    assert m.problems[0].message == "line 1: not valid JSON (nested too deep to parse)"
    assert "nested deeper than 32" in m.problems[1].message
    assert "over the limit of 16 KiB" in m.problems[2].message


# --- the directory walk ---------------------------------------------------------------------


def test_symlink_loop_neither_hangs_nor_duplicates(tmp_path: Path) -> None:
    """A symlink back to a parent is skipped with a warning; linked siblings are walked once."""
    root = tmp_path / "tapes"
    wav(root / "day1" / "a.wav")
    (root / "day1" / "back").symlink_to(root)
    (root / "self").symlink_to(root / "self")  # ELOOP
    (root / "alias").symlink_to(root / "day1")
    m = load_manifest(root)
    assert [i.item_id for i in m.items] == ["alias/a"]  # "alias" sorts first and is walked
    assert any("already walked" in w for w in m.warnings)


def test_several_directories_are_kept_apart(tmp_path: Path) -> None:
    """Two directories given together get their names as prefixes (and a hash when the names
    are equal); one directory and files need no prefix."""
    wav(tmp_path / "x" / "tapes" / "m.wav")
    wav(tmp_path / "y" / "tapes" / "m.wav")
    wav(tmp_path / "talks" / "m.wav")
    one = wav(tmp_path / "one.wav")
    ids = [i.item_id for i in load_inputs([tmp_path / "talks", one]).items]
    assert ids == ["m", "one"]
    ids = [i.item_id for i in load_inputs([tmp_path / "talks", tmp_path / "x" / "tapes"]).items]
    assert ids == ["talks/m", "tapes/m"]
    ids = [
        i.item_id for i in load_inputs([tmp_path / "x" / "tapes", tmp_path / "y" / "tapes"]).items
    ]
    assert len(set(ids)) == 2 and all(i.startswith("tapes-") and i.endswith("/m") for i in ids)
    again = [
        i.item_id for i in load_inputs([tmp_path / "x" / "tapes", tmp_path / "y" / "tapes"]).items
    ]
    assert again == ids


def test_clash_across_inputs_names_the_first(tmp_path: Path) -> None:
    """The same stem as two INPUT files: the later one is duplicate_id naming the first path."""
    a, b = wav(tmp_path / "a.wav"), wav(tmp_path / "sub" / "a.wav")
    m = load_inputs([a, b])
    (prob,) = m.problems
    assert prob.code == "duplicate_id"
    assert prob.message == f"{b}: id 'a' is already used by {a}"


def test_several_manifests_number_lines_on(tmp_path: Path) -> None:
    """Line numbers of a second manifest follow the first's, and messages name the file."""
    m1 = write(tmp_path / "one.txt", "a.wav\n")
    m2 = write(tmp_path / "two.jsonl", '{"source": "b.wav"}\nnot json\n')
    m = load_inputs([m1, m2])
    assert [e.line_no for e in m.entries] == [1, 2, 3]
    assert m.problems[0].message.startswith("two.jsonl line 2: not valid JSON")


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "base", "parts"),
    [
        ("/in/day2/m.wav", "/in", ["day2", "m.wav"]),
        ("/elsewhere/m.wav", "/in", ["elsewhere", "m.wav"]),
        ("/in", "/in", ["in"]),
        ("https://h:8080/a/b%20c.mp3?x=1", "/in", ["a", "b c.mp3"]),
        ("file:///in/x/y.wav", "/in", ["x", "y.wav"]),
        ("s3://bkt/incoming/late/n.wav", "s3://bkt/incoming", ["late", "n.wav"]),
        ("s3://other/incoming/n.wav", "s3://bkt/incoming", ["incoming", "n.wav"]),
        ("file:///srv/in/a.wav", "file:///srv/in/", ["a.wav"]),
    ],
)
def test_source_parts(source: str, base: str, parts: list[str]) -> None:
    """Paths inside the base are relative to it; other paths and URLs keep their path."""
    assert source_parts(source, base) == parts


def test_derived_ids_fit_in_bytes_and_are_stable() -> None:
    """Every derived part fits NAME_MAX with the longest output suffix, the whole id fits
    MAX_ID_BYTES, and the same path always gives the same id."""
    assert max(len(f) + 1 for f in FORMATS) + MAX_PART_BYTES <= 255
    for parts in (["東" * 200 + ".wav"], ["d" * 300, "e.wav"], ["x" * 250] * 10 + ["y.wav"]):
        item_id = derive_id(parts)
        assert id_error(item_id) is None, item_id
        assert all(len(p.encode()) <= MAX_PART_BYTES for p in item_id.split("/"))
        assert len(item_id.encode()) <= MAX_ID_BYTES
        assert derive_id(list(parts)) == item_id
    assert derive_id(["東" * 200 + ".wav"]) != derive_id(["東" * 199 + "x.wav"])


def test_scheduled_sources_mirror_the_prefix() -> None:
    """Scheduled runs derive ids below the schedule's prefix."""
    entries = entries_from_sources(["s3://b/in/a.wav", "s3://b/in/late/c.wav"], root="s3://b/in")
    assert [e.item_id for e in entries if isinstance(e, ManifestItem)] == ["a", "late/c"]


# --- unknown fields and options -------------------------------------------------------------


def test_unknown_fields_warn_once_per_name_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt field is one warning, however many lines have it; known options are quiet."""
    p = write(
        tmp_path / "m.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"source": "a.wav", "langauge": "en", "hotwords": "Qwen"},
                {"source": "b.wav", "langauge": "de", "context": "a talk"},
                {"source": "c.wav", "vocabulary_id": "v1", "zzz": 1},
            ]
        ),
    )
    m = load_manifest(p)
    assert m.problems == ()
    assert m.warnings == (
        "unknown field 'langauge' on line 1 and 1 more line(s): did you mean 'language'?; "
        "it is passed to the provider as an option (--strict refuses it)",
        "unknown field 'zzz' on line 3; it is passed to the provider as an option "
        "(--strict refuses it)",
    )
    assert m.items[0].options == (("hotwords", "Qwen"), ("langauge", "en"))


def test_strict_fails_lines_with_unknown_fields(tmp_path: Path) -> None:
    """Under strict, each line with an unknown field is manifest_invalid, with the hint."""
    p = write(
        tmp_path / "m.jsonl",
        '{"source": "a.wav", "langauge": "en"}\n{"source": "b.wav", "context": "x"}\n',
    )
    m = load_manifest(p, strict=True)
    assert [i.item_id for i in m.items] == ["b"]
    assert m.problems[0].message == "line 1: unknown field 'langauge': did you mean 'language'?"
    assert m.warnings == ()


@pytest.mark.parametrize(
    ("engine", "model", "options", "refused"),
    [
        ("local", "tiny.en", {"vocabulary_id": "v"}, "'vocabulary_id'"),
        ("local", "tiny.en", {"context": "x", "hotwords": "y", "enable_words": True}, None),
        ("local", "tiny.en", {"something_new": 1}, None),  # unknown: warned, not refused
        ("dashscope", "fun-asr", {"vocabulary_id": "v", "diarization_enabled": True}, None),
        ("dashscope", "fun-asr", {"hotwords": "y"}, "'hotwords'"),
        ("dashscope", "qwen3-asr-flash", {"context": "x", "enable_itn": True}, None),
        ("dashscope", "qwen3-asr-flash-filetrans", {"context": "x"}, "'context'"),
    ],
)
def test_options_an_engine_cannot_honour(
    engine: str, model: str, options: dict[str, object], refused: str | None
) -> None:
    """A known option the item's engine and model cannot honour fails it with
    unsupported_option naming the option and the engine."""
    item = ManifestItem("a", "/in/a.wav", 4, options=tuple(sorted(options.items())))
    (seed,) = seeds_for([item], engine=engine, model=model, language=None)
    if refused is None:
        assert seed.failure is None
    else:
        assert seed.failure is not None
        code, message = seed.failure
        assert code == "unsupported_option"
        assert message.startswith(
            f"line 4: option {refused} is not supported by the {engine} engine (model {model})"
        )
