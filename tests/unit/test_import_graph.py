"""The driver packages import each other one way only: workers/ (Celery wiring), pipeline/flow
(the orchestration core) and pipeline/stages (one module per stage) have no import cycles,
counting imports inside functions too (which would only hide a cycle, not remove it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workers", "pipeline/flow", "pipeline/stages")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            # ``from workers import tasks`` names a module; ``import a.b.c`` imports a.b too.
            parts = target.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in known and candidate != name:
                    out.add(candidate)
                    break
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle() -> None:
    """A two-module loop is reported as such."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", [*PACKAGES, "all three together"])
def test_no_import_cycles(package: str) -> None:
    """No module of workers/, pipeline/flow or pipeline/stages reaches itself by imports."""
    found = modules()
    if package in PACKAGES:
        prefix = package.replace("/", ".")
        found = {k: v for k, v in found.items() if k == prefix or k.startswith(prefix + ".")}
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert find_cycle(graph) is None


def test_workers_wiring_is_seen() -> None:
    """The graph is not empty by mistake: the tasks import the dispatcher and the context."""
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert {"workers.dispatch", "workers.context", "workers.app"} <= graph["workers.tasks"]


def test_the_emulator_stands_apart_from_the_pipeline_core() -> None:
    """The emulator serves the provider's side: it shares the media functions and the
    result document with the pipeline, never its scheduling or its ledger."""
    code = (
        "import sys, pipeline.emulator.app\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('pipeline.flow', 'pipeline.ledger', 'pipeline.runner', 'workers'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert proc.stdout.strip() == "[]"
