"""Every key binding of the terminal app, in one place: the widgets use these lists, the help screen
shows them, and `[ui.keymap]` in config.toml overrides any of them by id (e.g. `pause = "ctrl+space"`)."""

from __future__ import annotations

from textual.binding import Binding

OUTLINE = [
    Binding("a", "add_sibling", "Add section", id="add-sibling"),
    Binding("A", "add_child", "Add subsection", id="add-child", show=False),
    Binding("r,f2", "rename", "Rename", id="rename"),
    Binding("delete,x", "delete", "Delete", id="delete"),
    Binding("K,ctrl+up", "move(-1)", "Move up", id="move-up", show=False),
    Binding("J,ctrl+down", "move(1)", "Move down", id="move-down", show=False),
    Binding("greater_than_sign,ctrl+right", "indent", "Indent", id="indent", show=False),
    Binding("less_than_sign,ctrl+left", "outdent", "Outdent", id="outdent", show=False),
    Binding("l", "toggle_lock", "Lock/unlock", id="lock"),
    Binding("e", "deepen", "Deepen", id="deepen"),
    Binding("w", "rewrite", "Rewrite", id="rewrite", show=False),
    Binding("u,ctrl+z", "undo", "Undo edit", id="undo"),
]

RESEARCH = [
    Binding("p", "toggle_pause", "Pause/resume", id="pause"),
    Binding("escape", "cancel_run", "Cancel run", id="cancel"),
    Binding("v", "toggle_report", "Section/report", id="toggle-report"),
    Binding("ctrl+e", "export", "Export", id="export"),
    Binding("s", "start_writing", "Start writing (reviewed plan)", id="start-writing"),
    Binding("ctrl+k", "ask", "Ask the report", id="ask", show=False),
    Binding("ctrl+s", "show_sessions", "Sessions", id="sessions", show=False),
]

APP = [
    Binding("f1,question_mark", "help", "Help", id="help"),
    Binding("ctrl+n", "new_research", "New research", id="new-research", show=False),
    Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
]

# Shown on the help screen only: bindings Textual itself provides.
BUILT_IN = [
    ("ctrl+p", "Command palette: every command, searchable"),
    ("tab / shift+tab", "Move between panes"),
    ("up / down, enter", "Move in a list; open or expand"),
]

GROUPS = (("Outline (while it runs; edits wait their turn)", OUTLINE), ("Research run", RESEARCH), ("Anywhere", APP))


def keys_for(binding: Binding, keymap: dict[str, str]) -> str:
    """The keys a binding answers to after the person's keymap: human-readable, comma-separated."""
    keys = keymap.get(binding.id or "", binding.key)
    names = {"greater_than_sign": ">", "less_than_sign": "<", "question_mark": "?"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in keys.split(","))


def unknown_ids(keymap: dict[str, str]) -> list[str]:
    """Keymap entries that name no binding (a typo in config.toml), to warn about."""
    known = {b.id for _, group in GROUPS for b in group}
    return sorted(k for k in keymap if k not in known)
