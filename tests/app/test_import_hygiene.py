"""The CLI and the engine never load Textual: headless runs stay fast and work without a terminal.

Import-linter cannot see imports inside functions, so this imports each module in a fresh
interpreter and looks at sys.modules (harlequin's test does the same).
"""

from __future__ import annotations

import subprocess
import sys

HEADLESS = [
    "sala_report.app.cli",
    "sala_report.app.warp",
    "sala_report.app.export",
    "sala_report.app.doctor",
    "sala_report.app.demo",
    "sala_report.app.runs",
    "sala_report.app.commands.tools",
    "sala_report.app.commands.export",
]

PROBE = """
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
from sala_report.app.cli import _register_commands
_register_commands()
loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith(("textual.", "sala_report.app.tui")))
print(",".join(loaded))
"""


def test_cli_and_engine_never_import_textual():
    probe = PROBE.format(modules=HEADLESS)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"headless modules loaded: {done.stdout.strip()}"
