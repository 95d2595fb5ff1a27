"""ARCHITECTURE.md's life-cycle diagram against the state table the ledger enforces."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.states import ALLOWED, ItemState

DOC = Path(__file__).resolve().parents[2] / "ARCHITECTURE.md"
EDGE = re.compile(r"^\s*(\w+) --> (\w+)", re.M)


def test_every_arrow_of_the_diagram_is_an_allowed_transition() -> None:
    edges = [
        (ItemState(a), ItemState(b)) for a, b in EDGE.findall(DOC.read_text()) if "[*]" not in a
    ]
    assert len(edges) > 20  # the diagram was found and read
    refused = [
        f"{a} -> {b}" for a, b in edges if a is not b and b not in ALLOWED.get(a, frozenset())
    ]
    assert refused == []


def test_every_state_is_in_the_diagram() -> None:
    text = DOC.read_text()
    assert [s.value for s in ItemState if s.value not in text] == []
