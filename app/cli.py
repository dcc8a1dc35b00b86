"""`sala-report`: the command line. Command bodies delegate; this file only wires options, settings, logs and exit codes."""

from __future__ import annotations

import importlib
import logging
import logging.handlers
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from click.utils import make_default_short_help

from sala_report.app.errors import EXIT_INTERRUPTED, EXIT_USAGE, SalaError, file_failure
from sala_report.app.settings import Settings, load_settings

log = logging.getLogger("sala_report")


@dataclass
class AppContext:
    settings: Settings
    debug: bool = False


class SalaGroup(click.Group):
    """The top-level group. A file or the store failing in any command becomes one clear error naming the
    store, which is known here (from the loaded settings) and not where the failure surfaced. A group that
    loads its subcommands lazily should extend this one."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OSError, sqlite3.Error) as e:
            store = ctx.obj.settings.paths.store_path if isinstance(ctx.obj, AppContext) else None
            raise file_failure(e, store) from e


# Each subcommand's module under app/commands and its one-line help, so `--help` lists them without importing
# any (they pull in retrieval, httpx and sqlite-utils: most of a second). tests/app/test_lazy_cli.py keeps
# these lines equal to the commands' own.
LAZY_COMMANDS = {
    "run": ("research", "Research QUESTION and write a cited report."),
    "resume": (
        "research",
        "Continue a session from its last checkpoint (after a crash, Ctrl-C, or a used-up step budget).",
    ),
    "sessions": ("research", "List research sessions, newest first, with their ids and status."),
    "ask": ("ask", "Ask a stored report a question: answered from its sources, cited with its reference numbers."),
    "sources": ("sources", "The source store: add files, folders and pages; search and read what is stored."),
    "export": (
        "export",
        "Write a stored session's report (finished or partial) as Markdown, HTML, PDF, JSON or Word, "
        "or its references as BibTeX or RIS.",
    ),
    "doctor": (
        "tools",
        "Check GPU and kernels, model files, web search, PDF export and the data dir; say how to fix problems.",
    ),
    "config": ("tools", "Where the settings file is, and the settings in effect."),
    "demo": ("tools", "Run the whole app offline: the embedded default model on documents shipped with sala-report."),
}


class LazySalaGroup(SalaGroup):
    """Imports a subcommand's module only when that subcommand runs (or its own help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module = importlib.import_module(f"sala_report.app.commands.{LAZY_COMMANDS[cmd_name][0]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand:  # click suggests from the loaded commands only: offer them all
            raise click.exceptions.NoSuchCommand(args[0], possibilities=self.list_commands(ctx), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands or name not in LAZY_COMMANDS:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(LAZY_COMMANDS[name][1], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazySalaGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SALA_REPORT_HOME",
    help="Where sessions, sources and reports are kept (env: SALA_REPORT_HOME).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default: config.toml in the XDG config dir; env: SALA_REPORT_CONFIG).",
)
@click.option("--debug", is_flag=True, help="Log debug detail to stderr and the log file.")
@click.version_option(package_name="sala-report")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, config_path: Path | None, debug: bool) -> None:
    """Local deep research: cited reports from the web and your documents, written on your machine."""
    settings = load_settings(config_path, overrides={"paths.data_dir": data_dir})
    _setup_logging(settings, debug)
    ctx.obj = AppContext(settings=settings, debug=debug)
    if ctx.invoked_subcommand is None:
        from sala_report.app.commands.tools import launch_tui

        launch_tui(ctx.obj)


def _setup_logging(settings: Settings, debug: bool) -> None:
    """A rotating log file in the XDG state dir; stderr gets warnings, or everything with --debug."""
    root = logging.getLogger("sala_report")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.handlers.clear()
    try:
        settings.paths.log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            settings.paths.log_dir / "sala-report.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    except OSError as e:  # a read-only home must not stop the run
        print(f"warning: cannot write the log file in {settings.paths.log_dir}: {e}", file=sys.stderr)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG if debug else logging.WARNING)
    stderr.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(stderr)


def _register_commands() -> None:
    """Import every subcommand now (tests that look at all of them); `main` leaves them to the lazy group."""
    for name in LAZY_COMMANDS:
        cli.get_command(click.Context(cli), name)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns our errors into one message on stderr and an exit code."""
    try:
        result = cli.main(args=argv, prog_name="sala-report", standalone_mode=False)
    except click.exceptions.Abort:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return e.exit_code if e.exit_code else EXIT_USAGE
    except click.exceptions.Exit as e:
        return e.exit_code
    except (SalaError, OSError, sqlite3.Error) as e:
        error = e if isinstance(e, SalaError) else file_failure(e, None)
        print(f"Error: {error.title}: {error}", file=sys.stderr)
        if error.hint:
            print(f"  {error.hint}", file=sys.stderr)
        log.debug("failure", exc_info=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("Interrupted; progress so far is saved.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
