"""The help screen (F1 or ?): every key binding, after the person's keymap, grouped by where it works."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from sala_report.app.tui import keys


def bindings_table(keymap: dict[str, str]) -> Group:
    """One small table per group: keys (after the keymap), what they do, and the id to remap them with.
    Keys and ids are never cut (a cut id cannot be remapped); on a narrow terminal the descriptions wrap."""
    tables = []
    groups = [
        (title, [(keys.keys_for(b, keymap), b.description, b.id or "") for b in group]) for title, group in keys.GROUPS
    ]
    groups.append(("Built into Textual", [(key, what, "") for key, what in keys.BUILT_IN]))
    key_width = max(len(row[0]) for _, rows in groups for row in rows)
    id_width = max(len(row[2]) for _, rows in groups for row in rows)
    for title, rows in groups:
        table = Table(
            box=None,
            show_header=False,
            padding=(0, 1),
            title=Text(title, style="bold underline"),
            title_justify="left",
            expand=True,
        )
        table.add_column("keys", style="bold cyan", no_wrap=True, width=key_width)
        table.add_column("action", ratio=1, overflow="fold")
        table.add_column("id", style="dim", no_wrap=True, width=id_width)
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return Group(*tables)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss(None)", "Close")]

    def __init__(self, keymap: dict[str, str], config_path: str) -> None:
        super().__init__()
        self.keymap = keymap
        self.config_path = config_path

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(Text("Keys", style="bold"), classes="dialog-title")
            yield Static(bindings_table(self.keymap))
            yield Static(
                f'Change any key in {self.config_path}, e.g.\n  [ui.keymap]\n  pause = "ctrl+space"\n'
                "Edits to the outline wait their turn: the engine applies them between steps, and the outline "
                "marks them (pending) until then.\nEsc closes this help.",
                classes="dialog-hint",
            )
