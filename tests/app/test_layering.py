"""The import graph of app/, read from the source (AST), obeys the layering in ARCHITECTURE.md: no circle of
module-level imports, widgets never import screens, and the engine (app/warp) never imports the terminal app
or the click commands, not even inside a function.

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


def _edges(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in graph.items() if a.startswith(source) for b in bs if b.startswith(target))


def test_the_reader_sees_every_module():
    assert "sala_report.app.warp.engine" in MODULES and "sala_report.app.tui.widgets.outline_tree" in MODULES
    graph = _graph(module_level=True)
    assert "sala_report.app.warp.events" in graph["sala_report.app.warp.engine"]


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle_inside_app():
    assert _cycles(_graph(module_level=True)) == []


def test_widgets_never_import_screens():
    """Widgets post messages; the screen that holds them opens dialogs."""
    assert _edges(_graph(module_level=False), f"{PACKAGE}.tui.widgets", f"{PACKAGE}.tui.screens") == []


@pytest.mark.parametrize("upper", ["tui", "commands", "cli"])
def test_the_engine_never_imports_the_terminal_app_or_the_commands(upper):
    assert _edges(_graph(module_level=False), f"{PACKAGE}.warp", f"{PACKAGE}.{upper}") == []
