"""Every setting is read by some code: a field nothing reads would let a person change it to no effect.
The check reads the source (AST), so it covers paths no test runs."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from sala_report.app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _names_read() -> set[str]:
    """Attribute names read anywhere in the code, and string constants (fields matched by name, as
    `fetch_config` does), outside the module that declares the settings."""
    names: set[str] = set()
    for folder in ("app", "model", "retrieval", "kernels"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "app" / "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)
    return names


def test_every_setting_is_read_somewhere():
    read = _names_read()
    settings = Settings()
    unread = [
        f"{section.name}.{field.name}"
        for section in dataclasses.fields(Settings)
        for field in dataclasses.fields(getattr(settings, section.name))
        if field.name not in read
    ]
    assert unread == [], f"settings that no code reads: {unread}"
