"""Strict SRT and WebVTT readers: a test fails on any block a player could misread."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Cues", "assert_monotonic", "parse_srt", "parse_vtt"]

Cues = list[tuple[int, int, list[str]]]  # (begin ms, end ms, text lines)

_T = r"(\d{2,}):([0-5]\d):([0-5]\d)"  # hours: two digits or more
SRT_TIME = re.compile(rf"^{_T},(\d{{3}}) --> {_T},(\d{{3}})$")
VTT_TIME = re.compile(rf"^{_T}\.(\d{{3}}) --> {_T}\.(\d{{3}})$")


def _ms(h: str, m: str, s: str, f: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(f)


def _check_lines(lines: list[str], max_lines: int | None, max_chars: int | None) -> None:
    assert lines and all(ln.strip() and "-->" not in ln for ln in lines), lines
    if max_lines is not None:
        assert len(lines) <= max_lines, lines
    if max_chars is not None:
        assert all(len(ln.strip()) <= max_chars for ln in lines), lines


def parse_srt(text: str, *, max_lines: int | None = 2, max_chars: int | None = 42) -> Cues:
    """Blocks numbered 1..n, a timing line, then 1..``max_lines`` text lines of at most
    ``max_chars`` (the default layout; None: no limit); cues in order, none overlapping."""
    if not text:
        return []
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    cues = []
    for i, block in enumerate(text.rstrip("\n").split("\n\n"), start=1):
        index, timing, *lines = block.split("\n")
        assert index == str(i), f"cue {i} numbered {index!r}"
        m = SRT_TIME.match(timing)
        assert m, f"bad SRT timing line {timing!r}"
        _check_lines(lines, max_lines, max_chars)
        cues.append((_ms(*m.groups()[:4]), _ms(*m.groups()[4:]), lines))
    assert_monotonic(cues)
    return cues


def parse_vtt(text: str, *, max_lines: int | None = 2, max_chars: int | None = 42) -> Cues:
    """The WEBVTT header, then cues as in :func:`parse_srt` (no numbers, ``.`` before ms)."""
    assert text.startswith("WEBVTT\n\n")
    body = text[len("WEBVTT\n\n") :]
    cues = []
    for block in body.rstrip("\n").split("\n\n") if body else []:
        timing, *lines = block.split("\n")
        m = VTT_TIME.match(timing)
        assert m, f"bad VTT timing line {timing!r}"
        _check_lines(lines, max_lines, max_chars)
        cues.append((_ms(*m.groups()[:4]), _ms(*m.groups()[4:]), lines))
    assert_monotonic(cues)
    return cues


def assert_monotonic(cues: list[Any]) -> None:
    """Each cue lasts and starts no earlier than the previous one ends: parsed tuples or
    anything with ``begin_ms``/``end_ms`` (pipeline.outputs.render.Cue)."""
    prev_end = 0
    for c in cues:
        begin, end = (c.begin_ms, c.end_ms) if hasattr(c, "begin_ms") else c[:2]
        assert end > begin, f"cue {c} does not last"
        assert begin >= prev_end, f"cue {c} starts before the previous one ends ({prev_end})"
        prev_end = end
