"""Unit tests for pipeline.inputs.manifest: formats, ids, per-line problems and file-name
encodings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.inputs.manifest import Manifest, ManifestUnreadable, display, load_manifest
from pipeline.models import ManifestItem, ManifestProblem

NON_UTF8 = b"caf\xe9.wav"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def jsonl(path: Path, *rows: object) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def touch_bytes(path: bytes) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def only_problem(m: Manifest) -> ManifestProblem:
    assert len(m.problems) == 1, m.entries
    return m.problems[0]


# --- formats --------------------------------------------------------------------------------


def test_jsonl_fields_options_and_line_numbers(tmp_path: Path) -> None:
    """A JSONL manifest yields typed items, sorted extra options and physical line numbers."""
    p = write(
        tmp_path / "m.jsonl",
        "# header comment\n\n"
        '{"id": "one", "source": "a.wav", "language": "en", "start_s": 1, "end_s": "2.5",'
        ' "model": "tiny", "channel": 1, "zeta": [1], "alpha": true}\n'
        '   \n{"source": "https://example.com/b.mp3"}\n',
    )
    m = load_manifest(p)
    assert m.fmt == "jsonl" and m.path == str(p) and m.problems == ()
    first, second = m.items
    assert first == ManifestItem(
        item_id="one",
        source=str(tmp_path / "a.wav"),
        line_no=3,
        language="en",
        start_s=1.0,
        end_s=2.5,
        model="tiny",
        channel=1,
        options=(("alpha", True), ("zeta", [1])),
    )
    assert (second.item_id, second.source, second.line_no) == (
        "b",
        "https://example.com/b.mp3",
        5,
    )


def test_ndjson_suffix_and_bom(tmp_path: Path) -> None:
    """A .ndjson file is JSONL, and a UTF-8 byte-order mark at the start is ignored."""
    p = write(tmp_path / "m.ndjson", b'\xef\xbb\xbf{"source": "x.wav"}\n')
    m = load_manifest(p)
    assert m.fmt == "jsonl" and [i.item_id for i in m.items] == ["x"]


def test_csv_with_empty_cells_and_extra_columns(tmp_path: Path) -> None:
    """CSV empty cells mean absent and extra columns become string options."""
    p = write(
        tmp_path / "m.csv",
        "source, language ,start_s,end_s,id,speaker,topic\n"
        "a.wav,en,,,,2,\n"
        '"b, c.wav",,0.5,3,bee,,"x, y"\n',
    )
    m = load_manifest(p)
    assert m.fmt == "csv" and m.problems == ()
    a, b = m.items
    assert (a.item_id, a.language, a.start_s, a.line_no) == ("a", "en", None, 2)
    assert a.options == (("speaker", "2"),)
    assert (b.item_id, b.source, b.start_s, b.end_s) == (
        "bee",
        str(tmp_path / "b, c.wav"),
        0.5,
        3.0,
    )
    assert b.options == (("topic", "x, y"),)


def test_csv_without_source_column_is_unreadable(tmp_path: Path) -> None:
    """A CSV whose header has no 'source' column cannot be read at all, and says which file."""
    p = write(tmp_path / "m.csv", "path,language\na.wav,en\n")
    with pytest.raises(ManifestUnreadable, match=r"m\.csv.*'source'"):
        load_manifest(p)


def test_csv_bad_rows_are_problems(tmp_path: Path) -> None:
    """A CSV row with too many cells or an unterminated quote fails alone."""
    p = write(tmp_path / "m.csv", 'source,id\na.wav,a,extra\n"b.wav,b\nc.wav,c\n')
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["c"]
    assert [(x.line_no, x.code) for x in m.problems] == [
        (2, "manifest_invalid"),
        (3, "manifest_invalid"),
    ]
    assert m.problems[0].message == "line 2: 3 cells but the header has 2 columns"
    assert m.problems[1].message.startswith("line 3: not valid CSV")


def test_plain_list(tmp_path: Path) -> None:
    """A plain list has one source per line; comments and blank lines are skipped."""
    p = write(tmp_path / "m.txt", "# sources\na.wav\n\n  sub/b.flac  \ns3://bucket/c.mp3\n")
    m = load_manifest(p)
    assert m.fmt == "list"
    assert [(i.line_no, i.item_id, i.source) for i in m.items] == [
        (2, "a", str(tmp_path / "a.wav")),
        (4, "sub/b", str(tmp_path / "sub" / "b.flac")),
        (5, "c", "s3://bucket/c.mp3"),
    ]


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('# comment\n\n{"source": "a.wav"}\n', "jsonl"),
        ("# comment\nid,source\nx,a.wav\n", "csv"),
        ("a,b.wav\n", "list"),  # a comma alone does not make a CSV
        ("a.wav\n", "list"),
        ("", "list"),
    ],
)
def test_format_sniffing(tmp_path: Path, text: str, fmt: str) -> None:
    """Without a telling suffix the format is sniffed from the first meaningful line."""
    m = load_manifest(write(tmp_path / "manifest.in", text))
    assert m.fmt == fmt and m.problems == ()
    assert len(m.items) == (0 if not text else 1)


def test_explicit_fmt_overrides_suffix(tmp_path: Path) -> None:
    """An explicit fmt wins over the suffix; an unknown fmt is refused."""
    p = write(tmp_path / "m.txt", '{"source": "a.wav"}\n')
    assert load_manifest(p, fmt="jsonl").items[0].source == str(tmp_path / "a.wav")
    with pytest.raises(ManifestUnreadable, match="unknown manifest format"):
        load_manifest(p, fmt="yaml")
    with pytest.raises(ManifestUnreadable, match="not a directory"):
        load_manifest(p, fmt="dir")


def test_missing_manifest_is_unreadable(tmp_path: Path) -> None:
    """A manifest that does not exist raises ManifestUnreadable naming the file."""
    with pytest.raises(ManifestUnreadable, match=r"nope\.jsonl"):
        load_manifest(tmp_path / "nope.jsonl")


# --- sources --------------------------------------------------------------------------------


def test_source_resolution(tmp_path: Path) -> None:
    """Relative paths resolve against the manifest's directory; URLs and file:// stay verbatim."""
    p = jsonl(
        tmp_path / "lists" / "m.jsonl",
        {"source": "a.wav"},
        {"source": "../media/b.wav"},
        {"source": "/abs/c.wav"},
        {"source": "file:///srv/d.wav"},
        {"source": "oss://bucket/e.wav"},
        {"source": "HTTP://example.com/f.wav"},
    )
    assert [i.source for i in load_manifest(p).items] == [
        str(tmp_path / "lists" / "a.wav"),
        str(tmp_path / "media" / "b.wav"),
        "/abs/c.wav",
        "file:///srv/d.wav",
        "oss://bucket/e.wav",
        "HTTP://example.com/f.wav",
    ]


def test_relative_manifest_path_gives_absolute_sources(tmp_path: Path, monkeypatch) -> None:
    """A manifest named by a relative path still yields absolute local sources."""
    jsonl(tmp_path / "m.jsonl", {"source": "a.wav"})
    monkeypatch.chdir(tmp_path)
    m = load_manifest("m.jsonl")
    assert m.path == str(tmp_path / "m.jsonl") and m.items[0].source == str(tmp_path / "a.wav")


def test_unknown_scheme_is_a_problem(tmp_path: Path) -> None:
    """An ftp:// source is a manifest_invalid problem that keeps the source as given."""
    prob = only_problem(load_manifest(jsonl(tmp_path / "m.jsonl", {"source": "ftp://h/a.wav"})))
    assert prob.code == "manifest_invalid" and prob.source == "ftp://h/a.wav"
    assert prob.message.startswith("line 1: source scheme 'ftp://' is not supported")


# --- ids ------------------------------------------------------------------------------------


def test_derived_ids_mirror_paths_and_clashes_are_duplicates(tmp_path: Path) -> None:
    """Derived ids keep the path under the manifest's directory; an id that remains equal
    (same stem, other extension) fails the later line, naming the first."""
    p = write(tmp_path / "m.txt", "a.wav\nx/a.wav\na.mp3\nb.wav\ny/a.flac\n")
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["a", "x/a", "b", "y/a"]
    prob = only_problem(m)
    assert (prob.line_no, prob.code, prob.item_id) == (3, "duplicate_id", "a")
    assert prob.message == "line 3: id 'a' is already used on line 1"


def test_an_id_depends_only_on_its_own_line(tmp_path: Path) -> None:
    """Adding lines before others never changes the ids those others get."""
    before = load_manifest(write(tmp_path / "m.txt", "x/a.wav\nb.wav\n"))
    after = load_manifest(write(tmp_path / "m.txt", "a.wav\nz/a.wav\nx/a.wav\nc/b.wav\nb.wav\n"))
    old = {i.source: i.item_id for i in before.items}
    assert all({i.source: i.item_id for i in after.items}[s] == v for s, v in old.items())


def test_explicit_and_derived_ids_clash_by_order(tmp_path: Path) -> None:
    """A derived id equal to an explicit one is a duplicate of whichever came first."""
    p = jsonl(
        tmp_path / "m.jsonl",
        {"source": "a.wav"},
        {"source": "b/a.wav"},
        {"id": "a", "source": "z.wav"},
        {"id": "b/a-3", "source": "y.wav"},
    )
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["a", "b/a", "b/a-3"]
    assert [(x.line_no, x.code) for x in m.problems] == [(3, "duplicate_id")]


def test_a_duplicate_keeps_the_source_that_owns_the_id(tmp_path: Path) -> None:
    """Given the ledger's owners, the source already holding an id keeps it even when a new
    file with the same id sorts before it."""
    m = load_manifest(write(tmp_path / "m.txt", "a.aac\na.wav\n"))
    assert m.items[0].source == str(tmp_path / "a.aac")
    kept = m.prefer({"a": str(tmp_path / "a.wav")})
    assert [i.source for i in kept.items] == [str(tmp_path / "a.wav")]
    (prob,) = kept.problems
    assert (prob.line_no, prob.code) == (1, "duplicate_id")
    assert prob.message == "line 1: id 'a' is already used on line 2"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("https://h.example/p/My%20Talk.v2.mp3?sig=abc#frag", "p/My_Talk.v2"),
        ("s3://bucket/dir/", "dir"),
        ("https://h.example/", "item"),
        ("/x/..hidden..name.wav", "x/_hidden._name"),
        ("/x/---.wav", "x/item"),
        ("/x/" + "é" * 120 + ".wav", "x/" + "é" * 120),  # 240 bytes: fits
        ("file:///srv/a%2Fb.wav", "srv/a/b"),  # the file opened is /srv/a/b.wav
        ("https://h.example/a/../b/c.wav", "a/_/b/c"),
    ],
)
def test_derived_id_shapes(tmp_path: Path, source: str, expected: str) -> None:
    """Derived ids come from the decoded path (after the host for URLs; the whole path for
    local files outside the manifest's directory) with unsafe characters replaced."""
    m = load_manifest(jsonl(tmp_path / "m.jsonl", {"source": source}))
    assert m.items[0].item_id == expected


def test_long_derived_ids_are_shortened_stably(tmp_path: Path) -> None:
    """A file name over 250 bytes in UTF-8 (not characters) is cut with a short hash, the
    same on every run; a path over 1024 bytes keeps its name under one hashed part."""
    name = "東" * 100  # 100 characters, 300 bytes
    a = load_manifest(jsonl(tmp_path / "m.jsonl", {"source": f"{name}.wav"})).items[0].item_id
    b = load_manifest(jsonl(tmp_path / "n.jsonl", {"source": f"{name}.wav"})).items[0].item_id
    assert a == b and len(a.encode()) <= 250 and a.startswith("東" * 80)
    deep = "/".join(["d" * 200] * 8) + "/x.wav"
    c = load_manifest(jsonl(tmp_path / "m.jsonl", {"source": deep})).items[0].item_id
    assert len(c.encode()) <= 1024 and c.startswith("_long-") and c.endswith("/x")


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    """A repeated explicit id fails on the later line, naming the first."""
    p = jsonl(
        tmp_path / "m.jsonl",
        {"id": "x", "source": "a.wav"},
        {"id": "y", "source": "b.wav"},
        {"id": "x", "source": "c.wav"},
    )
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["x", "y"]
    prob = only_problem(m)
    assert (prob.line_no, prob.code, prob.item_id) == (3, "duplicate_id", "x")
    assert prob.message == "line 3: id 'x' is already used on line 1"
    assert prob.source == str(tmp_path / "c.wav")


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../escape",
        "a//b",
        "/a",
        "a/",
        "",
        ".hidden",
        "a/.b",
        "-x",
        "a..b",
        "a b",
        "x" * 251,
        "東" * 84,
        "/".join(["x" * 200] * 6),
        "a\\b",
        "caf\udce9",
    ],
)
def test_unsafe_explicit_ids_are_problems(tmp_path: Path, bad_id: str) -> None:
    """An explicit id that is not a safe file name is refused, explaining what is allowed."""
    m = load_manifest(jsonl(tmp_path / "m.jsonl", {"id": bad_id, "source": "a.wav"}))
    prob = only_problem(m)
    assert (prob.code, prob.item_id) == ("manifest_invalid", None)
    assert prob.message.startswith(f"line 1: id {bad_id!r} is not a safe file name")
    assert "letters, digits, '.', '_' and '-'" in prob.message and "bytes" in prob.message
    json.dumps(prob.message, ensure_ascii=False).encode()  # printable: no raw surrogates


def test_unicode_explicit_id_is_allowed(tmp_path: Path) -> None:
    """Unicode letters and digits are allowed in explicit ids, and '/' nests them."""
    m = load_manifest(
        jsonl(
            tmp_path / "m.jsonl",
            {"id": "Zürich_東京-2.a", "source": "a.wav"},
            {"id": "day2/東" * 1 + "x" * 200, "source": "b.wav"},
        )
    )
    assert [i.item_id for i in m.items] == ["Zürich_東京-2.a", "day2/東" + "x" * 200]


# --- malformed lines ------------------------------------------------------------------------


S = '{"source": "a.wav", '  # a good start for a line with one bad field
NUM, INT = "must be a non-negative number, got", "must be a non-negative integer, got"


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        ('{"source": "a.wav" "id": 1}', "not valid JSON (Expecting ',' delimiter at column 20)"),
        ("[1, 2]", "expected a JSON object, got '[1, 2]'"),
        ('"x"', "expected a JSON object, got '\"x\"'"),
        ('{"language": "en"}', "'source' is missing"),
        ('{"source": null}', "'source' is missing"),
        ('{"source": 5}', "source must be a non-empty string, got 5"),
        (S + '"start_s": "abc"}', f"start_s {NUM} 'abc'"),
        (S + '"start_s": -1}', f"start_s {NUM} -1"),
        (S + '"end_s": "NaN"}', f"end_s {NUM} 'NaN'"),
        (S + '"start_s": true}', f"start_s {NUM} True"),
        (S + '"start_s": 5, "end_s": 2}', "end_s (2.0) must be greater than start_s (5.0)"),
        (S + '"start_s": 5, "end_s": 5}', "end_s (5.0) must be greater than start_s (5.0)"),
        (S + '"channel": 1.5}', f"channel {INT} 1.5"),
        (S + '"channel": "-1"}', f"channel {INT} '-1'"),
        (S + '"language": 5}', "language must be a string, got 5"),
        (S + '"model": ["m"]}', "model must be a string, got ['m']"),
        (S + '"id": 7}', "id must be a string, got 7"),
    ],
)
def test_malformed_line_messages(tmp_path: Path, line: str, fault: str) -> None:
    """Each malformed line becomes a manifest_invalid problem saying the line and the fault."""
    m = load_manifest(jsonl(tmp_path / "m.jsonl", {"source": "ok.wav"}, line))
    prob = only_problem(m)
    assert (prob.line_no, prob.code, prob.message) == (2, "manifest_invalid", f"line 2: {fault}")
    assert [i.item_id for i in m.items] == ["ok"]


def test_several_faults_on_one_line_are_all_reported(tmp_path: Path) -> None:
    """All faults of a line are reported together; a derived id and the source are kept."""
    m = load_manifest(
        jsonl(tmp_path / "m.jsonl", {"source": "a.wav", "start_s": "x", "channel": -2})
    )
    prob = only_problem(m)
    assert prob.message == (
        "line 1: start_s must be a non-negative number, got 'x'; "
        "channel must be a non-negative integer, got -2"
    )
    assert (prob.item_id, prob.source) == ("a", str(tmp_path / "a.wav"))


def test_numeric_strings_and_nulls_in_jsonl(tmp_path: Path) -> None:
    """Numbers may be numeric strings; null and blank optional fields mean absent."""
    p = jsonl(
        tmp_path / "m.jsonl",
        {"source": "a.wav", "start_s": " 1.5 ", "end_s": 3, "channel": "2", "language": None},
        {"source": "b.wav", "channel": 1.0, "model": "  ", "id": None},
    )
    a, b = load_manifest(p).items
    assert (a.start_s, a.end_s, a.channel, a.language) == (1.5, 3.0, 2, None)
    assert (b.item_id, b.channel, b.model) == ("b", 1, None)
    assert isinstance(b.channel, int)


def test_bad_json_among_good_lines_keeps_order(tmp_path: Path) -> None:
    """A non-JSON line fails alone; the good lines around it still load, in order."""
    p = jsonl(tmp_path / "m.jsonl", {"source": "a.wav"}, "{not json", {"source": "b.wav"}, "oops")
    m = load_manifest(p)
    assert [(type(e).__name__, e.line_no) for e in m.entries] == [
        ("ManifestItem", 1),
        ("ManifestProblem", 2),
        ("ManifestItem", 3),
        ("ManifestProblem", 4),
    ]
    assert [i.item_id for i in m.items] == ["a", "b"]
    assert all(p.message.startswith(f"line {p.line_no}: not valid JSON (") for p in m.problems)


def test_invalid_utf8_line_in_jsonl(tmp_path: Path) -> None:
    """An undecodable JSONL line is a problem of its own; the rest still loads."""
    p = write(
        tmp_path / "m.jsonl",
        b'{"source": "a.wav"}\n{"source": "caf\xe9.wav"}\n{"source": "b.wav"}\n',
    )
    m = load_manifest(p)
    assert [i.item_id for i in m.items] == ["a", "b"]
    prob = only_problem(m)
    assert prob.line_no == 2 and prob.code == "manifest_invalid"
    assert prob.message.startswith("line 2: not valid UTF-8")


# --- non-UTF-8 file names and directories ---------------------------------------------------


def test_non_utf8_name_in_list_manifest(tmp_path: Path) -> None:
    """A non-UTF-8 name in a list round-trips to its bytes and gets a surrogate-free id."""
    touch_bytes(os.fsencode(tmp_path) + b"/" + NON_UTF8)
    p = write(tmp_path / "m.txt", b"good.wav\n" + NON_UTF8 + b"\n")
    item = load_manifest(p).items[1]
    assert os.fsencode(item.source) == os.fsencode(tmp_path) + b"/" + NON_UTF8
    assert os.path.exists(item.source)
    assert item.item_id == "caf_"
    item.item_id.encode("utf-8")  # would raise on a surrogate


def test_non_utf8_name_in_directory_manifest(tmp_path: Path) -> None:
    """A non-UTF-8 file name found by a directory walk round-trips and gets a safe id."""
    touch_bytes(os.fsencode(tmp_path) + b"/" + NON_UTF8)
    (item,) = load_manifest(tmp_path).items
    assert os.fsencode(item.source) == os.fsencode(tmp_path) + b"/" + NON_UTF8
    assert item.item_id == "caf_"
    assert display(item.source) == str(tmp_path) + "/caf\\xe9.wav"


def test_directory_walk(tmp_path: Path) -> None:
    """A directory walk recurses, keeps media only, skips hidden entries, sorts by path bytes
    and mirrors the tree in the ids."""
    for name in ["b.wav", "a.MP3", "notes.txt", ".hidden.wav", "sub/c.flac", "sub/deep/d.mkv",
                 ".git/e.wav", "sub/.cache/f.wav", "sub/g", "Z.opus"]:  # fmt: skip
        write(tmp_path / name, b"")
    m = load_manifest(tmp_path)
    assert m.fmt == "dir" and m.path == str(tmp_path) and m.problems == ()
    rel = [os.path.relpath(i.source, tmp_path) for i in m.items]
    assert rel == ["Z.opus", "a.MP3", "b.wav", "sub/c.flac", "sub/deep/d.mkv"]
    assert [i.line_no for i in m.items] == [1, 2, 3, 4, 5]
    assert [i.item_id for i in m.items] == ["Z", "a", "b", "sub/c", "sub/deep/d"]
    assert all(os.path.isabs(i.source) for i in m.items)


def test_empty_directory_has_no_entries(tmp_path: Path) -> None:
    """An empty directory is a manifest with zero entries, not an error."""
    assert load_manifest(tmp_path).entries == ()


def test_display() -> None:
    """display leaves normal text alone and shows surrogate-escaped bytes as \\xNN."""
    assert display("Zürich.wav") == "Zürich.wav"
    assert display(os.fsdecode(NON_UTF8)) == "caf\\xe9.wav"
    assert display("lone \ud800") == "lone \\ud800"
