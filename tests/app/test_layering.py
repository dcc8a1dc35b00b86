"""The import graph of app/, read from the source (AST), obeys the layering in ARCHITECTURE.md: no circle of
module-level imports and none between wings, widgets never import screens, the engine (app/warp) and the
export cluster (app/export) never import the front ends, and the front ends reach the engine through the
wiring (app/wiring.py, app/runs.py), never the reverse; not even inside a function.

Import-time circles are what break a lazy import or a reordering; imports inside functions run later and
cannot form one, so the circle check reads module-level statements only (not `if TYPE_CHECKING:` blocks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sala_report.app

APP = Path(sala_report.app.__file__).parent
PACKAGE = "sala_report.app"


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


MODULES = {_module_name(p): p for p in sorted(APP.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours an import statement loads: `from a.b import c` loads a.b.c when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: top level, and inside top-level if/try blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                found += _module_level(handler.body)
    return found


def _graph(*, module_level: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        nodes = (
            _module_level(tree.body)
            if module_level
            else [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        )
        graph[name] = {t for n in nodes for t in _targets(n) if t in MODULES and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


def _edges(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if _within(a, source) for b in bs if _within(b, target))


def _wing(name: str) -> str:
    """`sala_report.app.warp.engine` -> `warp`: a folder or a module at app/'s top level."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 else "app"


def _wings(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    wings: dict[str, set[str]] = {}
    for a, bs in graph.items():
        wings.setdefault(_wing(a), set()).update(_wing(b) for b in bs if _wing(b) != _wing(a))
    return wings


def test_the_reader_sees_every_module():
    assert "sala_report.app.warp.engine" in MODULES and "sala_report.app.tui.widgets.outline_tree" in MODULES
    graph = _graph(module_level=True)
    assert "sala_report.app.warp.events" in graph["sala_report.app.warp.engine"]


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_inside_app():
    assert _cycles(_graph(module_level=True)) == []


def test_no_import_circle_inside_app_even_through_imports_inside_functions():
    """A lazy import that closes a circle still ties two modules into one: whichever is lower must not
    reach back up (steps hands evidence mode in from the engine instead of importing it)."""
    assert _cycles(_graph(module_level=False)) == []


def test_widgets_never_import_screens():
    """Widgets post messages; the screen that holds them opens dialogs."""
    assert _edges(_graph(module_level=False), f"{PACKAGE}.tui.widgets", f"{PACKAGE}.tui.screens") == []


def test_the_wings_find_an_edge_between_them():
    graph = {f"{PACKAGE}.runs": {f"{PACKAGE}.commands.sources"}, f"{PACKAGE}.commands.sources": set()}
    assert _edges(graph, f"{PACKAGE}.runs", f"{PACKAGE}.commands") == [f"{PACKAGE}.runs -> {PACKAGE}.commands.sources"]
    assert _edges(graph, f"{PACKAGE}.run", f"{PACKAGE}.commands") == []  # a name's prefix is not its wing
    assert _wings(graph) == {"runs": {"commands"}, "commands": set()}


def test_no_circle_between_wings_even_inside_functions():
    """A wing (warp, export, tui, commands, runs, wiring, cli...) may import another lazily, but never back."""
    wings = _wings(_graph(module_level=False))
    assert {"warp", "export", "tui", "commands", "runs", "wiring", "cli"} <= set(wings)
    assert _cycles(wings) == []


@pytest.mark.parametrize("upper", ["tui", "commands", "cli", "export", "runs", "wiring"])
def test_the_engine_never_imports_the_front_ends_the_export_or_the_wiring(upper):
    """The engine knows its Generator and Retriever protocols, not which settings build them or who shows it."""
    assert _edges(_graph(module_level=False), f"{PACKAGE}.warp", f"{PACKAGE}.{upper}") == []


@pytest.mark.parametrize("upper", ["tui", "commands", "cli", "runs", "wiring", "warp"])
def test_the_export_never_imports_the_front_ends_or_the_engine(upper):
    """Export turns a report's Markdown into files; whoever holds the session passes the Markdown in."""
    assert _edges(_graph(module_level=False), f"{PACKAGE}.export", f"{PACKAGE}.{upper}") == []


@pytest.mark.parametrize("lower", ["wiring", "runs"])
@pytest.mark.parametrize("upper", ["tui", "commands", "cli", "demo", "doctor"])
def test_the_front_ends_import_the_wiring_never_the_reverse(lower, upper):
    assert _edges(_graph(module_level=False), f"{PACKAGE}.{lower}", f"{PACKAGE}.{upper}") == []


def test_the_wiring_sits_below_the_runs():
    """wiring.py builds parts from the settings; runs.py holds them for a process."""
    assert _edges(_graph(module_level=False), f"{PACKAGE}.wiring", f"{PACKAGE}.runs") == []
