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


# What makes a start slow: each costs from half a second (trafilatura) to several (torch, llama-index).
HEAVY = ("torch", "transformers", "llama_index", "trafilatura")

START_PROBE = """
import asyncio, contextlib, io, sys
from pathlib import Path

from sala_report.app.cli import main

with contextlib.redirect_stdout(io.StringIO()):
    main(["--help"])
after_help = sorted(m for m in sys.modules if m.startswith("sala_report.app.commands"))

from sala_report.app.runs import LocalServices
from sala_report.app.settings import load_settings
from sala_report.app.tui.app import SalaApp

services = LocalServices(load_settings(None, env={{}}, overrides={{"paths.data_dir": Path({data!r})}}))


async def first_screen():
    async with SalaApp(services).run_test(size=(100, 30)) as pilot:
        await pilot.pause()


asyncio.run(first_screen())
services.close()
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print("commands after --help:", ",".join(after_help))
print("heavy:", ",".join(heavy))
"""


def test_help_and_the_terminal_app_start_without_heavy_imports(tmp_path):
    """`sala-report --help` imports no subcommand module; the app's first screen loads no model or web stack."""
    probe = START_PROBE.format(data=str(tmp_path / "data"), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines())
    assert lines["commands after --help"].strip() == ""
    assert lines["heavy"].strip() == "", f"loaded at start: {lines['heavy']}"
