"""The live outline: each section with its state, and the keys that edit it while the engine runs.

Edits leave as `OutlineTree.EditsRequested` messages; the tree shows them as pending until the
engine's events say they were applied (or refused)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree

from sala_report.app.tui import keys
from sala_report.app.tui.outline_state import STATE_ICONS, OutlineState, Place, Row, inverse
from sala_report.app.warp import edits

STATE_STYLES = {
    "planned": "dim",
    "searching": "bold yellow",
    "writing": "bold cyan",
    "written": "green",
    "locked": "magenta",
    "flagged": "bold red",
    "skipped": "red",
    "pending": "italic yellow",
}


@dataclass
class _Done:
    edit: edits.Edit
    place: Place | None
    ids_before: frozenset[int]
    description: str  # in the words of the outline when it was asked for


class OutlineTree(Tree[Row]):
    """The outline as a tree. `state` is fed by the research screen; this widget only reads it."""

    BINDINGS = keys.OUTLINE

    class EditsRequested(Message):
        """The person asked for these edits (in order); `description` is for the activity log."""

        def __init__(self, edits: list[edits.Edit], description: str) -> None:
            super().__init__()
            self.edits = edits
            self.description = description

    class TitleWanted(Message):
        """Ask the person for a title (the screen opens the dialog); `then` gets it stripped, if not empty."""

        def __init__(self, prompt: str, value: str, then: Callable[[str], None]) -> None:
            super().__init__()
            self.prompt = prompt
            self.value = value
            self.then = then

    class ConfirmWanted(Message):
        """Ask the person to confirm (the screen opens the dialog); `then` runs on yes."""

        def __init__(self, question: str, then: Callable[[], None]) -> None:
            super().__init__()
            self.question = question
            self.then = then

    def __init__(self, state: OutlineState, **kwargs) -> None:
        super().__init__("Outline", **kwargs)
        self.state = state
        self.show_root = False
        self.guide_depth = 3
        self._done: list[_Done] = []

    def redraw(self) -> None:
        """Rebuild the tree from the state, keeping the cursor on the same section."""
        current = self.cursor_node.data if self.cursor_node is not None else None
        keep = current.node_id if current is not None else None
        line = self.cursor_line
        self.clear()
        if self.state.view is not None:
            self.root.set_label(self.state.view.title or "Outline")
        rows = self.state.rows()
        parents = {0: self.root}
        for row in rows:
            parent = parents.get(row.depth - 1, self.root)
            parents[row.depth] = parent.add(self._label(row), data=row, expand=True, allow_expand=False)
        # Every node is expanded and the root is hidden, so a row's index is its line.
        lines = [i for i, row in enumerate(rows) if keep is not None and row.node_id == keep]
        if lines:
            self.cursor_line = lines[0]
        elif rows:
            self.cursor_line = min(max(line, 0), len(rows) - 1)

    def _label(self, row: Row) -> Text:
        label = Text()
        label.append(f"{STATE_ICONS[row.state]} ", style=STATE_STYLES[row.state])
        if row.number:
            label.append(f"{row.number} ", style="bold")
        # Pending edits come before the title, so a narrow pane still shows them.
        for note in row.pending:
            label.append(f"(pending: {note}) ", style="italic yellow")
        label.append(row.title, style="italic" if row.node_id is None else "")
        if row.deepen:
            label.append("  ⇣ deepen", style="cyan")
        if row.state == "flagged":
            label.append(f"  ⚑ {self.state.flagged.get(row.node_id or -1, 0)} weak", style="red")
        return label

    @property
    def selected(self) -> Row | None:
        node = self.cursor_node
        return node.data if node is not None and node.data is not None and node.data.node_id is not None else None

    def _place(self, row: Row | None) -> Place | None:
        return self.state.places().get(row.node_id) if row and row.node_id is not None else None

    def request(self, edit: edits.Edit, *, undoable: bool = True) -> None:
        place = self.state.places().get(edit.node_id) if hasattr(edit, "node_id") else None
        ids = frozenset(self.state.node_ids())
        description = edits.describe(edit, self.state.names())
        if undoable:
            self._done.append(_Done(edit, place, ids, description))
        self.state.add_pending(edit)
        self.post_message(self.EditsRequested([edit], description))
        self.redraw()

    def action_add_sibling(self) -> None:
        place = self._place(self.selected)
        parent = place.parent_id if place else None
        index = place.index + 1 if place else None
        self._ask_title(
            "New section", lambda title: self.request(edits.AddSection(title, parent_id=parent, index=index))
        )

    def action_add_child(self) -> None:
        row = self.selected
        if row is None:
            return self.action_add_sibling()
        self._ask_title(
            f"New subsection of {row.number} {row.title}",
            lambda title: self.request(edits.AddSection(title, parent_id=row.node_id)),
        )

    def action_rename(self) -> None:
        row = self.selected
        if row is not None:
            self._ask_title(
                f"Rename {row.number}",
                lambda title: self.request(edits.RenameSection(row.node_id, title=title)),
                value=row.title,
            )

    def action_delete(self) -> None:
        row = self.selected
        if row is None:
            return

        question = f"Delete {row.number} {row.title} and everything under it?"
        self.post_message(self.ConfirmWanted(question, lambda: self.request(edits.DeleteSection(row.node_id))))

    def action_move(self, step: int) -> None:
        place = self._place(self.selected)
        if place is None:
            return
        index = place.index + step
        if 0 <= index < len(place.siblings):
            self.request(edits.MoveSection(place.node.id, place.parent_id, index))

    def action_indent(self) -> None:
        place = self._place(self.selected)
        if place is None or place.index == 0:
            return self.notify("Only a section with one above it can become its subsection.", severity="warning")
        new_parent = self.state.places()[place.siblings[place.index - 1]]
        self.request(edits.MoveSection(place.node.id, new_parent.node.id, len(new_parent.node.children)))

    def action_outdent(self) -> None:
        place = self._place(self.selected)
        if place is None or place.parent_id is None:
            return self.notify("A top-level section cannot move further out.", severity="warning")
        parent = self.state.places()[place.parent_id]
        self.request(edits.MoveSection(place.node.id, parent.parent_id, parent.index + 1))

    def action_toggle_lock(self) -> None:
        place = self._place(self.selected)
        if place is not None:
            self.request(edits.LockSection(place.node.id, locked=not place.node.locked))

    def action_deepen(self) -> None:
        row = self.selected
        if row is not None:
            self.request(edits.DeepenSection(row.node_id))

    def action_rewrite(self) -> None:
        row = self.selected
        if row is not None:
            self.request(edits.RewriteSection(row.node_id))

    def action_undo(self) -> None:
        if not self._done:
            return self.notify("Nothing to undo.")
        done = self._done.pop()
        undo = inverse(done.edit, done.place, self.state, done.ids_before)
        if isinstance(undo, str):
            return self.notify(f"Cannot undo {done.description}: {undo}.", severity="warning")
        for edit in undo:
            self.state.add_pending(edit)
        self.post_message(self.EditsRequested(undo, f"undo {done.description}"))
        self.redraw()

    def _ask_title(self, prompt: str, then: Callable[[str], None], value: str = "") -> None:
        self.post_message(self.TitleWanted(prompt, value, then))
