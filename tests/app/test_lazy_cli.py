"""The lazy command group: `--help` lists every subcommand from a table without importing it, so the table
must match the commands themselves; a subcommand still runs (and shows its own help) when named."""

from __future__ import annotations

import importlib

import click
import pytest

from sala_report.app.cli import LAZY_COMMANDS, cli, main


def _real_commands() -> dict[str, tuple[str, click.Command]]:
    found = {}
    for module in sorted({m for m, _ in LAZY_COMMANDS.values()} | {"export", "research", "sources", "tools"}):
        for command in importlib.import_module(f"sala_report.app.commands.{module}").COMMANDS:
            found[command.name] = (module, command)
    return found


def test_the_table_names_every_command_with_its_module_and_help():
    real = _real_commands()
    assert set(LAZY_COMMANDS) == set(real)
    for name, (module, help_line) in LAZY_COMMANDS.items():
        assert module == real[name][0], name
        for limit in (45, 200):  # what `--help` shows at a narrow and a wide terminal
            assert click.utils.make_default_short_help(help_line, limit) == real[name][1].get_short_help_str(limit), (
                name
            )


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in LAZY_COMMANDS:
        assert f"  {name} " in out, name
    assert "Research QUESTION and write a cited report." in out


def test_a_subcommand_loads_when_named(capsys):
    assert main(["sessions", "--help"]) == 0
    assert "List research sessions" in capsys.readouterr().out
    assert "sessions" in cli.commands


def test_an_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


@pytest.mark.parametrize("typo, suggestion", [("sesions", "sessions"), ("expor", "export")])
def test_a_misspelt_command_gets_a_suggestion(capsys, typo, suggestion):
    assert main([typo]) == 2
    assert suggestion in capsys.readouterr().err
