"""CLI commands: doctor, config, demo, and the terminal app's launcher."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from sala_report.app.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PARTIAL, UsageError
from sala_report.app.settings import default_config_path


@click.command()
@click.option("--online", is_flag=True, help="Also contact the search engine (and the model server, if one is set).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_obj
def doctor(obj, online: bool, as_json: bool) -> int:
    """Check GPU and kernels, model files, web search, PDF export and the data dir; say how to fix problems."""
    from sala_report.app import doctor as checks

    found = checks.run_checks(obj.settings, online=online)
    result = checks.summary(found)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        checks.format_checks(found, click.echo)
    return 0 if result["ok"] else EXIT_ERROR


@click.group()
def config() -> None:
    """Where the settings file is, and the settings in effect."""


@config.command("path")
def config_path() -> None:
    """Print the settings file's path (it may not exist yet)."""
    click.echo(str(default_config_path()))


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_obj
def config_show(obj, as_json: bool) -> None:
    """Print the settings in effect (defaults, file, environment and flags merged) as TOML."""
    tree = _plain(dataclasses.asdict(obj.settings))
    if tree["model"].get("api_key"):
        tree["model"]["api_key"] = "********"
    if as_json:
        click.echo(json.dumps(tree, indent=2))
    else:
        click.echo(f"# settings in effect; the file is {default_config_path()}\n" + settings_toml(tree))


def settings_toml(tree: dict[str, dict[str, Any]]) -> str:
    """Settings (as plain sections) as a TOML document a person can copy into config.toml and edit."""
    lines: list[str] = []
    for section, values in tree.items():
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if key not in tables]
        for key, table in tables.items():
            lines.append(f"\n[{section}.{key}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is a JSON string


@click.command()
@click.option(
    "--question",
    "-q",
    metavar="TEXT|N",
    help="Your own question, or the number of one of the demo questions (default: 1; --list shows them).",
)
@click.option("--model", help="Another model than the embedded default (a .gguf file, a folder, a known name).")
@click.option(
    "--headless", is_flag=True, help="Print progress instead of opening the app (automatic without a terminal)."
)
@click.option("--list", "list_questions", is_flag=True, help="List the demo questions and exit.")
@click.pass_obj
def demo(obj, question: str | None, model: str | None, headless: bool, list_questions: bool) -> int:
    """Run the whole app offline: the embedded default model on documents shipped with sala-report."""
    from sala_report.app import demo as demo_run
    from sala_report.app.runs import LocalServices

    if list_questions:
        for n, text in enumerate(demo_run.questions(), 1):
            click.echo(f"{n}. {text}")
        return 0
    plan = demo_run.plan(obj.settings, question, model)
    if headless or not sys.stdout.isatty():
        services = LocalServices(plan.settings, progress=lambda message: click.echo(message, err=True))
        try:
            result, written = demo_run.run_headless(services, plan.request)
        finally:
            services.close()
        for path in written:
            click.echo(str(path))
        return EXIT_CODES.get(result.status, EXIT_ERROR)
    for line in run_app(plan.settings, run=plan.request, auto_export="pdf"):
        click.echo(line, err=True)
    return 0


EXIT_CODES = {"done": 0, "partial": EXIT_PARTIAL, "cancelled": EXIT_INTERRUPTED, "failed": EXIT_ERROR}

COMMANDS: list = [doctor, config, demo]


def launch_tui(ctx) -> None:
    """`sala-report` with no subcommand: the terminal app, opening on the start screen."""
    if not sys.stdout.isatty():
        raise UsageError(
            "the terminal app needs a terminal", hint="For scripts use `sala-report run QUESTION --headless`."
        )
    run_app(ctx.settings)


def run_app(settings, **first) -> list[str]:
    """Run the terminal app; returns the lines to print after it quits (where the reports are)."""
    from sala_report.app.runs import LocalServices
    from sala_report.app.tui.app import SalaApp

    # Warnings printed on stderr would scribble over the screen; the log file still gets them.
    root = logging.getLogger("sala_report")
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    services = LocalServices(settings)
    try:
        _ = services.store  # opened before the screen starts: a damaged or read-only store is one clear error here
        app = SalaApp(
            services,
            keymap=settings.ui.keymap,
            theme=settings.ui.theme,
            config_path=str(default_config_path()),
            **first,
        )
        app.run()
    finally:
        services.close()
    return app.farewell()
