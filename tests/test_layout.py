"""The package's shape: no import cycles, dependencies pointing the way DESIGN.md says, and the
wire protocol defined in one place."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pilotwave

ROOT = Path(pilotwave.__file__).parent


@functools.cache
def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The pilotwave modules ``path`` imports at run time (function-local imports included,
    ``if TYPE_CHECKING:`` blocks not)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }

    def owner(name: str) -> str:
        while name not in known:
            name = name.rpartition(".")[0]
        return name

    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names if a.name.startswith("pilotwave")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pilotwave"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.add(full if full in known else owner(node.module or ""))
    return found


@functools.cache
def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(p, known) - {m} for m, p in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, if there is any (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _below(prefix: str) -> set[str]:
    return {m for m in _graph() if m == prefix or m.startswith(prefix + ".")}


def test_dependencies_point_one_way() -> None:
    graph = _graph()

    def reaches(src: str, dst: str) -> list[str]:
        return sorted(
            f"{m} -> {n}"
            for m in _below(src)
            for n in graph[m]
            if n == dst or n.startswith(dst + ".")
        )

    # The queue knows nothing of workflows, servers or pilots; the SDK nothing of the server
    # or the pilot; the pilot talks to the server only over HTTP; the protocol depends on
    # nothing but the errors.
    assert reaches("pilotwave.wms", "pilotwave.engine") == []
    assert reaches("pilotwave.wms", "pilotwave.server") == []
    assert reaches("pilotwave.engine", "pilotwave.server") == []
    assert reaches("pilotwave.sdk", "pilotwave.pilot") == []
    assert reaches("pilotwave.sdk", "pilotwave.server") == []
    assert reaches("pilotwave.pilot", "pilotwave.server") == []
    assert reaches("pilotwave.pilot", "pilotwave.wms") == []
    protocol_deps = {n for m in _below("pilotwave.protocol") for n in graph[m]}
    assert protocol_deps <= _below("pilotwave.protocol") | {"pilotwave.errors"}
    assert graph["pilotwave.errors"] == set()


def test_wire_markers_and_states_are_defined_only_in_the_protocol() -> None:
    """``$pw_…`` markers and state sets appear as literals in ``protocol`` and nowhere else."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith("pilotwave.protocol"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and (text.startswith("$pw_") or text == "upstream_failed"):
                offenders.append(f"{name}: {text!r}")
            if isinstance(node, ast.ClassDef) and node.name in {
                "JobState",
                "AttemptState",
                "PilotState",
                "WorkflowState",
                "JobKind",
                "Limits",
                "FunctionRef",
                "Gpu",
            }:
                bases = {ast.unparse(b) for b in node.bases}
                if not any(b.startswith("protocol.") for b in bases):
                    offenders.append(f"{name}: class {node.name}")
    assert offenders == []
