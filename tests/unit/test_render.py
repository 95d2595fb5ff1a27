"""Output writers: exact subtitle text, layout limits, monotonic cues, safe atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import assert_monotonic, parse_srt, parse_vtt

from pipeline.outputs import render
from pipeline.outputs.render import (
    FORMATS,
    CueLayout,
    build_cues,
    render_json,
    render_srt,
    render_tsv,
    render_txt,
    render_vtt,
    write_outputs,
)
from pipeline.outputs.transcript import Sentence, Transcript, Word

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the property test is skipped, the rest still runs
    given = None

LAYOUT = CueLayout()


def words_of(text: str, start: int = 0, step: int = 300) -> tuple[Word, ...]:
    out = []
    for i, tok in enumerate(text.split()):
        core = tok.rstrip(".,!?")
        out.append(Word(start + i * step, start + i * step + step - 50, core, tok[len(core) :]))
    return tuple(out)


def sentence(text: str, start: int = 0, step: int = 300, **kw) -> Sentence:
    ws = words_of(text, start, step)
    return Sentence(ws[0].begin_ms, ws[-1].end_ms, text, ws, **kw)


TWO = Transcript((sentence("Hello there, world.", 0, 400), sentence("How are you?", 2000, 500)))


def test_srt_exact_for_two_sentences():
    """Two short sentences give two numbered SRT cues with comma milliseconds."""
    assert render_srt([TWO]) == (
        "1\n00:00:00,000 --> 00:00:01,150\nHello there, world.\n\n"
        "2\n00:00:02,000 --> 00:00:03,450\nHow are you?\n"
    )


def test_vtt_exact_for_two_sentences():
    """The same transcript gives a WEBVTT header and dot-millisecond cues."""
    assert render_vtt([TWO]) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.150\nHello there, world.\n\n"
        "00:00:02.000 --> 00:00:03.450\nHow are you?\n"
    )


def test_timestamps_past_one_and_past_ninety_nine_hours():
    """Hours are zero-padded to two digits and simply grow past 99."""
    late = Transcript(
        (
            Sentence(3_723_456, 3_724_000, "late", (Word(3_723_456, 3_724_000, "late"),)),
            Sentence(360_000_001, 360_001_001, "later", (Word(360_000_001, 360_001_001, "later"),)),
        )
    )
    srt = render_srt([late])
    assert "01:02:03,456 --> 01:02:04,156" in srt  # stretched to min_duration_ms
    assert "100:00:00,001 --> 100:00:01,001" in srt
    assert "01:02:03.456 --> 01:02:04.156" in render_vtt([late])
    assert len(parse_srt(srt)) == 2


def test_long_sentence_respects_line_and_duration_limits():
    """80 words become cues of at most 2 lines x 42 chars and 7 s, keeping every word in order."""
    text = " ".join(f"word{i:02d}{'.' if i == 79 else ''}" for i in range(80))
    s = sentence(text, 0, 450)
    cues = build_cues([Transcript((s,))], LAYOUT)
    assert len(cues) > 5
    for c in cues:
        assert 1 <= len(c.lines) <= 2
        assert all(len(line) <= 42 for line in c.lines)
        assert c.end_ms - c.begin_ms <= 7000
    assert " ".join(line for c in cues for line in c.lines) == text
    assert_monotonic(cues)
    parse_srt(render_srt([Transcript((s,))]))


def test_two_lines_are_balanced():
    """A cue too long for one line is split near the middle, not 42 + a stub."""
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    (cue,) = build_cues([Transcript((sentence(text, 0, 100),))], LAYOUT)
    assert len(cue.lines) == 2
    assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 8


def test_overlong_single_word_is_kept_whole_on_its_own_line():
    """A word longer than a line is never cut, and does not drag neighbours onto its line."""
    long_word = "x" * 60
    s = sentence(f"a {long_word} b", 0, 9000)
    cues = build_cues([Transcript((s,))], LAYOUT)
    assert [c.lines for c in cues] == [("a",), (long_word,), ("b",)]


def test_cues_break_at_long_silence_and_never_span_sentences():
    """A pause over max_gap_ms ends a cue, and so does every sentence end."""
    ws = (Word(0, 300, "before"), Word(2500, 2800, "after"))
    t = Transcript(
        (Sentence(0, 2800, "before after", ws), sentence("One.", 3000), sentence("Two.", 3400))
    )
    assert [c.lines for c in build_cues([t], LAYOUT)] == [
        ("before",),
        ("after",),
        ("One.",),
        ("Two.",),
    ]


def test_short_cue_is_stretched_but_never_into_the_next():
    """Cues shorter than min_duration_ms grow into free time only."""
    t = Transcript(
        (
            Sentence(0, 100, "a", (Word(0, 100, "a"),)),
            Sentence(300, 400, "b", (Word(300, 400, "b"),)),
        )
    )
    assert [(c.begin_ms, c.end_ms) for c in build_cues([t], LAYOUT)] == [(0, 300), (300, 1000)]


def test_overlapping_words_and_zero_length_words_stay_monotonic():
    """Words that go back in time or last 0 ms still give strictly forward cues."""
    ws = (Word(1000, 1000, "zero"), Word(500, 400, "backwards"), Word(400, 9000, "long."))
    s1 = Sentence(1000, 9000, "zero backwards long.", ws)
    s2 = Sentence(2000, 2000, "inside", (Word(2000, 2000, "inside"),))
    cues = build_cues([Transcript((s1, s2))], LAYOUT)
    assert_monotonic(cues)
    assert {line for c in cues for line in c.lines} >= {"inside"}
    assert_monotonic(parse_vtt(render_vtt([Transcript((s1, s2))])))


def test_overlapping_channels_merge_by_start_time_without_overlap():
    """Two channels talking over each other interleave by start time and never overlap."""
    left = Transcript(
        (sentence("left one speaks first", 0, 500), sentence("left again", 4000, 500)), channel_id=0
    )
    right = Transcript(
        (sentence("right interrupts", 1000, 500), sentence("right also", 4100, 500)), channel_id=1
    )
    cues = build_cues([left, right], LAYOUT)
    assert_monotonic(cues)
    assert [c.lines[0].split()[0] for c in cues] == ["left", "right", "left", "right"]
    assert cues[0].end_ms - cues[0].begin_ms >= LAYOUT.min_duration_ms
    assert_monotonic(parse_srt(render_srt([left, right])))


def test_sentence_without_words_is_split_by_characters_over_its_span():
    """Text with no word times is spread over the sentence in proportion to its length."""
    text = " ".join(["lorem ipsum dolor sit amet"] * 8)
    s = Sentence(10_000, 30_000, text)
    cues = build_cues([Transcript((s,))], LAYOUT)
    assert len(cues) >= 3
    assert cues[0].begin_ms == 10_000 and cues[-1].end_ms == 30_000
    assert " ".join(line for c in cues for line in c.lines) == text
    for c in cues:
        assert c.end_ms - c.begin_ms <= 7000 and all(len(ln) <= 42 for ln in c.lines)
    assert_monotonic(cues)


def test_cjk_words_are_not_space_separated():
    """CJK words join without spaces, in cues from words and from bare sentence text."""
    ws = tuple(
        Word(i * 200, i * 200 + 150, ch, "。" if i == 3 else "") for i, ch in enumerate("你好世界")
    )
    with_words = Sentence(0, 750, "你好世界。", ws)
    bare = Sentence(2000, 8000, "今天天气很好，我们去公园散步吧。" * 4)
    cues = build_cues([Transcript((with_words, bare))], LAYOUT)
    assert cues[0].lines == ("你好世界。",)
    assert all(" " not in line for c in cues for line in c.lines)
    assert "".join(line for c in cues[1:] for line in c.lines) == bare.text
    # CJK glyphs count double: at most 21 per 42-column line.
    assert all(len(line) <= 21 for c in cues for line in c.lines)


def test_vtt_escapes_markup_characters():
    """Text with < & > cannot be read as VTT tags or a timing arrow."""
    t = Transcript((Sentence(0, 1000, "a <b> & c --> d"),))
    assert "a &lt;b&gt; &amp; c --&gt; d" in render_vtt([t])
    parse_vtt(render_vtt([t]))


def test_txt_speakers_channels_and_empty():
    """Speakers get a prefix, channels are separated by one blank line, nothing gives ''."""
    a = Transcript((Sentence(0, 1, "Hi.", speaker_id=0), Sentence(1, 2, "Hello.", speaker_id=1)))
    b = Transcript((Sentence(0, 1, "Other channel."),), channel_id=1)
    assert render_txt([a, b]) == "Speaker 0: Hi.\nSpeaker 1: Hello.\n\nOther channel.\n"
    assert render_txt([Transcript(), Transcript()]) == ""
    assert render_srt([Transcript()]) == ""
    assert render_vtt([]) == "WEBVTT\n\n"


def test_render_json_keeps_unicode_and_ends_with_newline():
    """JSON is indented, not ASCII-escaped, and newline-terminated."""
    out = render_json({"text": "你好 café"})
    assert out == '{\n  "text": "你好 café"\n}\n'


def test_tsv_is_whisper_style_with_integer_ms():
    """tsv: Whisper's start/end/text header, one sentence a line in integer ms, channels merged
    by start time, tabs and newlines in text flattened to spaces."""
    left = Transcript((Sentence(1000, 1400, "Hello\tthere."), Sentence(5000, 5300, "Bye.")))
    right = Transcript((Sentence(2000, 2500, "Yes\nno."),), channel_id=1)
    assert render_tsv([left, right]) == (
        "start\tend\ttext\n1000\t1400\tHello there.\n2000\t2500\tYes no.\n5000\t5300\tBye.\n"
    )
    assert render_tsv([]) == "start\tend\ttext\n"


def test_layout_sets_line_width_and_count():
    """A one-line, 20-character layout gives single-line cues no wider than 20."""
    long = Transcript((sentence("The birch canoe slid on the smooth planks of the dock."),))
    cues = build_cues([long], CueLayout(max_chars_per_line=20, max_lines=1))
    assert len(cues) > 2 and all(len(c.lines) == 1 and len(c.lines[0]) <= 20 for c in cues)


def test_write_outputs_writes_every_format(tmp_path: Path):
    """Each requested format lands as <id>.<fmt> with the rendered content and no temp files."""
    doc = {"file_url": "x", "transcripts": []}
    written = write_outputs(tmp_path, "item-1", doc, [TWO], FORMATS)
    assert written == {f: f"item-1.{f}" for f in FORMATS}
    assert json.loads((tmp_path / "item-1.json").read_text("utf-8")) == doc
    assert (tmp_path / "item-1.txt").read_text("utf-8") == render_txt([TWO])
    assert (tmp_path / "item-1.srt").read_text("utf-8") == render_srt([TWO])
    assert (tmp_path / "item-1.vtt").read_text("utf-8") == render_vtt([TWO])
    assert (tmp_path / "item-1.tsv").read_text("utf-8") == render_tsv([TWO])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written.values())


def test_write_outputs_failed_replace_keeps_old_file(tmp_path: Path, monkeypatch):
    """If the final rename fails, the previous output survives and the temp file is removed."""
    (tmp_path / "a.txt").write_text("old\n")

    def boom(src, dst, **_dir_fds):
        raise OSError("disk gone")

    monkeypatch.setattr(render.os, "replace", boom)
    with pytest.raises(OSError):
        write_outputs(tmp_path, "a", {}, [TWO], ["txt"])
    assert (tmp_path / "a.txt").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize(
    "bad", ["../x", "a/../x", "a//b", "a/", ".hidden", "a/.b", "..", "", "a\\b", "/etc/passwd"]
)
def test_write_outputs_rejects_ids_outside_out_dir(tmp_path: Path, bad: str):
    """Item ids that are not safe relative paths are refused before anything is written."""
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        write_outputs(out, bad, {}, [TWO], ["txt"])
    assert not (tmp_path / "x.txt").exists()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_write_outputs_rejects_symlink_leading_out(tmp_path: Path):
    """A planted symlink at the target path cannot redirect the write outside out_dir."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").symlink_to(tmp_path / "victim.txt")
    with pytest.raises(ValueError):
        write_outputs(out, "a", {}, [TWO], ["json", "txt"])
    assert not (tmp_path / "victim.txt").exists()
    assert not (out / "a.json").exists()  # refused before anything was written


def test_write_outputs_nests_ids_in_directories(tmp_path: Path):
    """A nested id writes under its directories, created as needed, and returns those paths;
    a name of 250 bytes (the longest an id part may be) still fits with its suffix."""
    long = "東" * 83  # 249 bytes
    assert write_outputs(tmp_path, "day2/deep/meeting", {}, [TWO], ["json", "txt"]) == {
        "json": "day2/deep/meeting.json",
        "txt": "day2/deep/meeting.txt",
    }
    assert (tmp_path / "day2" / "deep" / "meeting.txt").read_text().strip()
    write_outputs(tmp_path, f"d/{long}", {}, [TWO], ["json"])
    assert (tmp_path / "d" / f"{long}.json").is_file()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f"{long}.json"]  # no temp


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_write_outputs_refuses_a_symlinked_directory_on_the_way(tmp_path: Path):
    """A symlink planted as one of a nested id's directories cannot lead the write outside
    out_dir, and a file where a directory should be is refused too."""
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    (out / "day2").symlink_to(victim)
    (out / "flat.txt").write_text("x")
    with pytest.raises(ValueError, match="day2"):
        write_outputs(out, "day2/meeting", {}, [TWO], ["txt"])
    with pytest.raises(ValueError, match=r"flat\.txt"):
        write_outputs(out, "flat.txt/a", {}, [TWO], ["txt"])
    assert list(victim.iterdir()) == []


def test_store_sink_keeps_nested_ids_under_its_prefix(tmp_path: Path):
    """The distributed sink uploads a nested id's files under the same relative path, and a
    key cannot climb out of the store."""
    from pipeline.errors import PermanentError
    from pipeline.flow.outputs import StoreSink
    from pipeline.storage import LocalStore

    store = LocalStore(tmp_path / "bucket")
    sink = StoreSink(store, "runs/b1")
    assert sink.write("day2/meeting", {}, [TWO], ["txt"]) == {"txt": "day2/meeting.txt"}
    assert (tmp_path / "bucket" / "runs" / "b1" / "day2" / "meeting.txt").read_text().strip()
    with pytest.raises(ValueError):
        sink.write("../../x", {}, [TWO], ["txt"])
    with pytest.raises(PermanentError):
        store.put_bytes(b"x", "../outside.txt")
    assert not (tmp_path / "outside.txt").exists()


def test_write_outputs_unknown_format_is_named(tmp_path: Path):
    """An unknown format raises ValueError that names it, and nothing is written."""
    with pytest.raises(ValueError, match="docx"):
        write_outputs(tmp_path, "a", {}, [TWO], ["txt", "docx"])
    assert not any(tmp_path.iterdir())


if given is not None:

    @st.composite
    def word_lists(draw):
        n = draw(st.integers(1, 60))
        out, t = [], draw(st.integers(0, 10_000))
        for _ in range(n):
            t += draw(st.integers(-2000, 4000))  # negative: overlapping or backwards words
            dur = draw(st.integers(-100, 9000))
            text = draw(st.sampled_from(["a", "word", "longerword", "你", "好。", "x" * 50, "ok,"]))
            out.append(Word(max(t, 0), max(t + dur, 0), text))
        return out

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(word_lists(), min_size=1, max_size=4),
        st.integers(10, 60),
        st.integers(1, 3),
    )
    def test_random_words_always_give_valid_cues(groups, chars, lines):
        """Any word sequences, over any channels, give monotonic cues within the line limits."""
        layout = CueLayout(max_chars_per_line=chars, max_lines=lines)
        transcripts = [
            Transcript((Sentence(ws[0].begin_ms, ws[-1].end_ms, "", tuple(ws)),), channel_id=i)
            for i, ws in enumerate(groups)
        ]
        cues = build_cues(transcripts, layout)
        assert_monotonic(cues)
        for c in cues:
            assert 1 <= len(c.lines) <= lines
            assert all(len(ln) <= chars or ln == "x" * 50 for ln in c.lines)  # lone long word
        # Line length is checked on the cues above (a lone long word may exceed it).
        srt = parse_srt(render_srt(transcripts, layout=layout), max_lines=lines, max_chars=None)
        vtt = parse_vtt(render_vtt(transcripts, layout=layout), max_lines=lines, max_chars=None)
        assert len(srt) == len(vtt) == len(cues)

else:  # pragma: no cover

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_random_words_always_give_valid_cues():
        """Placeholder so the missing property test shows up as skipped."""
