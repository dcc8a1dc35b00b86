"""CLI commands: tools."""

COMMANDS: list = []


def launch_tui(ctx) -> None:
    from sala_report.app.errors import UsageError

    raise UsageError("the terminal app is not built yet; use `sala-report run QUESTION --headless`")
