"""Every flag of every command is listed by its `--help` and named in the README (issue 15: "README documents
every flag; --help lists them"). Commands load lazily, so each is asked for by name as `sala-report` does."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from sala_report.app.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def _commands(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, click.Context(command, parent=ctx, info_name=name), (*path, name))
        elif command is not None and not command.hidden:
            yield (*path, name), command


COMMANDS = list(_commands(cli, click.Context(cli, info_name="sala-report")))


def _flags(command: click.Command) -> list[str]:
    return [o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")]


def test_the_commands_are_found():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "resume", "ask", "export", "sources exclude", "doctor"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_flag_is_in_the_help_and_the_readme(path, command):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ctx = click.Context(command, info_name=" ".join(("sala-report", *path)))
    shown = command.get_help(ctx)
    for flag in _flags(command):
        assert flag in shown, f"{' '.join(path)} --help does not list {flag}"
        if flag != "--help":  # the whole flag: `--question` is not found inside `--questions`
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", readme), f"the README lacks {flag}"
