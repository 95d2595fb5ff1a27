"""ARCHITECTURE.md's life-cycle diagram against the state table the ledger enforces."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.states import ALLOWED, ItemState, can_start_attempt

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


def test_the_new_attempt_table_is_the_rule_the_ledger_enforces() -> None:
    """ARCHITECTURE.md's new-attempt table against states.can_start_attempt, both ways:
    "always" with and without restart_running, "only" with it, "never" not at all; its
    rows name every state once."""
    text = DOC.read_text()
    table = text[text.index("| A new attempt starts from") :].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert len(rows) == 3  # the table was found and read
    seen: list[ItemState] = []
    for starts, when, enters in rows:
        olds = [ItemState(w) for w in starts.replace(",", " ").split()]
        news = {ItemState(w) for w in enters.replace(",", " ").split()}
        rule = when.split()[0].rstrip(":")
        assert rule in ("always", "only", "never")
        seen += olds
        for old in olds:
            for new in ItemState:
                for running in (False, True):
                    expected = new in news and (rule == "always" or (rule == "only" and running))
                    assert can_start_attempt(old, new, running=running) is expected, (
                        f"{old} -> {new}, restart_running={running}"
                    )
    assert sorted(seen) == sorted(ItemState)
