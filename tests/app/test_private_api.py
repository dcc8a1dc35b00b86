"""No code of ours reaches into another library's private parts (`_name`): those change without notice in any
release. The check reads the source (AST), so it covers paths no test runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("app",)
OURS = {"sala_report", "app", "model", "kernels", "retrieval", "tests"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _third_party(module: str | None) -> bool:
    top = (module or "").split(".")[0]
    return bool(top) and top not in OURS and top not in sys.stdlib_module_names


def _root(node: ast.expr) -> str | None:
    """The name an attribute chain or call starts from: `a` for `a.b(c).d`."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_uses(source: str) -> list[str]:
    """'line: what' for each private name of a third-party module this source touches.

    Caught: `from lib._impl import x`, `from lib import _x`, `lib._x`, `obj._x` where `obj` came from a
    third-party name in this module (one assignment deep), `getattr(obj, "_x")`, and `self._x` inside a
    subclass of a third-party class when the subclass does not define `_x` itself.
    """
    tree = ast.parse(source)
    foreign: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name):
                    if any(_is_private(part) for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
                    foreign.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _third_party(node.module):
            if any(_is_private(part) for part in (node.module or "").split(".")):
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                foreign.add(alias.asname or alias.name)
    for node in ast.walk(tree):  # names bound to what a third-party name gives back
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.withitem)):
            value = node.context_expr if isinstance(node, ast.withitem) else node.value
            targets = (
                [node.optional_vars]
                if isinstance(node, ast.withitem)
                else node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
            )
            if value is not None and _root(value) in foreign:
                foreign |= {t.id for t in targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and _root(node.value) in foreign
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _is_private(node.args[1].value)
                and _root(node.args[0]) in foreign
            )
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ClassDef) and any(_root(base) in foreign for base in node.bases):
            found += _inherited_private(node)
    return found


def _inherited_private(cls: ast.ClassDef) -> list[str]:
    """`self._x` in a subclass of a library class where `_x` is the library's, not defined here."""
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    own |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    own |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    own |= {
        t.attr
        for n in ast.walk(cls)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }
    return [
        f"{n.lineno}: {ast.unparse(n)} (inherited from a library class)"
        for n in ast.walk(cls)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "self"
        and _is_private(n.attr)
        and n.attr not in own
    ]


def test_no_private_attribute_of_a_third_party_module_is_used():
    problems = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            problems += [f"{path.relative_to(ROOT)}:{p}" for p in private_uses(path.read_text(encoding="utf-8"))]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "import fpdf\nfpdf.FPDF()._out('x')",
        "from fpdf import FPDF\npdf = FPDF()\npdf._set_font_for_page(1, 2)",
        "from fpdf import FPDF\nclass P(FPDF):\n    def f(self):\n        self._out('q')",
        "from typst._typst import Fonts",
        "from textual import _compositor",
        "import torch\ngetattr(torch.cuda, '_initialized')",
        "import typst as t\nwith t.Compiler() as c:\n    c._world",
    ],
)
def test_the_scan_finds_private_uses(source):
    assert private_uses(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import typst\ntypst.compile(b'x', format='pdf')",
        "from fpdf import FPDF\nclass P(FPDF):\n    def _mine(self):\n        return 1\n    def f(self):\n        self._cache = 2\n        return self._mine() + self._cache",
        "import json\njson._default_decoder",  # the standard library is out of scope
        "from sala_report.app.export import pdf\npdf._Writer",  # our own privates are ours
        "class Local:\n    _x = 1\nLocal()._x",
        "import typst\nx = typst.compile(b'')\nx.__len__()",
    ],
)
def test_the_scan_leaves_public_and_own_names_alone(source):
    assert private_uses(source) == [], source
