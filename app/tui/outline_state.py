"""What the outline pane shows, kept from the engine's events: the latest outline, which node the
engine works on, flags, and the person's edits that wait for the engine. Pure data, no widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sala_report.app.warp import edits, events

if TYPE_CHECKING:
    from sala_report.app.warp.engine import Delivered

STATE_ICONS = {
    "planned": "○",
    "searching": "◌",
    "writing": "✎",
    "written": "●",
    "locked": "⊘",
    "flagged": "⚑",
    "skipped": "✕",
    "pending": "+",
}


@dataclass(frozen=True)
class Row:
    """One line of the outline: `node_id` is None for a section the person added that is not applied yet."""

    node_id: int | None
    number: str
    title: str
    plan: str
    depth: int
    state: str
    deepen: bool = False
    pending: tuple[str, ...] = ()


@dataclass(frozen=True)
class Place:
    """Where a node sits: its parent (None at top level), its index and its siblings' ids."""

    parent_id: int | None
    index: int
    siblings: tuple[int, ...]
    depth: int
    node: events.NodeView


@dataclass
class Pending:
    edit: edits.Edit
    description: str
    ids_before: frozenset[int]


@dataclass
class OutlineState:
    view: events.OutlineView | None = None
    active: tuple[int | None, str] | None = None  # (node id, step kind) of the running step
    flagged: dict[int, int] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    # Written or skipped since the last OutlineChanged: the engine sends a new outline only when its
    # shape changes, so a section's own events update its state in between.
    written: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)

    def on_event(self, event: Delivered) -> bool:
        """Fold one engine event in; True when the outline pane should redraw."""
        if isinstance(event, events.OutlineChanged) or (isinstance(event, events.RunStarted) and event.outline):
            self.view = event.outline
            self.written.clear()
            self.skipped.clear()
        elif isinstance(event, events.StepStarted):
            self.active = (event.node_id, event.kind)
        elif isinstance(event, events.SectionWritten):
            self.active = None
            self.written.add(event.node_id)
        elif isinstance(event, events.SectionSkipped):
            self.active = None
            self.skipped.add(event.node_id)
        elif isinstance(event, events.CitationFlagged):
            self.flagged[event.node_id] = self.flagged.get(event.node_id, 0) + 1
        elif isinstance(event, (events.EditApplied, events.EditRejected)):
            self.pending = _without_first(self.pending, event.edit)
        elif isinstance(event, (events.Checkpointed, events.Finished, events.Failed)):
            self.active = None
        else:
            return False
        return True

    def add_pending(self, edit: edits.Edit) -> None:
        self.pending.append(Pending(edit, edits.describe(edit, self.names()), frozenset(self.node_ids())))

    def names(self) -> dict[int, str]:
        """Node id → what the outline shows for it ("4 Storage"): how the activity log names sections."""
        return {node_id: f"{p.node.number} {p.node.title}" for node_id, p in self.places().items()}

    def node_ids(self) -> set[int]:
        return {place.node.id for place in self.places().values()}

    def places(self) -> dict[int, Place]:
        out: dict[int, Place] = {}

        def visit(nodes: tuple[events.NodeView, ...], parent: int | None, depth: int) -> None:
            ids = tuple(n.id for n in nodes)
            for i, node in enumerate(nodes):
                out[node.id] = Place(parent, i, ids, depth, node)
                visit(node.children, node.id, depth + 1)

        if self.view is not None:
            visit(self.view.sections, None, 1)
        return out

    def rows(self) -> list[Row]:
        notes: dict[int, list[str]] = {}
        ghosts: dict[int | None, list[tuple[int | None, str]]] = {}
        for p in self.pending:
            if isinstance(p.edit, edits.AddSection):
                ghosts.setdefault(p.edit.parent_id, []).append((p.edit.index, p.edit.title))
            elif hasattr(p.edit, "node_id"):
                notes.setdefault(p.edit.node_id, []).append(_pending_note(p.edit))
        rows: list[Row] = []

        def visit(nodes: tuple[events.NodeView, ...], parent: int | None, depth: int) -> None:
            # A section being added shows where it will go (its index among the siblings), not at the end.
            slots: list[events.NodeView | str] = list(nodes)
            for index, title in ghosts.get(parent, ()):
                slots.insert(len(slots) if index is None else max(0, min(index, len(slots))), title)
            for slot in slots:
                if isinstance(slot, str):
                    rows.append(Row(None, "", slot, "", depth, "pending", pending=("new",)))
                    continue
                rows.append(
                    Row(
                        slot.id,
                        slot.number,
                        slot.title,
                        slot.plan,
                        depth,
                        self._state(slot),
                        slot.deepen,
                        tuple(notes.get(slot.id, ())),
                    )
                )
                visit(slot.children, slot.id, depth + 1)

        if self.view is not None:
            visit(self.view.sections, None, 1)
        return rows

    def _state(self, node: events.NodeView) -> str:
        if self.active and self.active[0] == node.id:
            return "writing" if self.active[1] == "write" else "searching"
        if node.locked:
            return "locked"
        if node.skipped or node.id in self.skipped:
            return "skipped"
        if node.id in self.flagged:
            return "flagged"
        return "written" if node.written or node.id in self.written else "planned"


def _pending_note(edit: edits.Edit) -> str:
    if isinstance(edit, edits.RenameSection):
        return f"rename → {edit.title}" if edit.title else "new plan"
    if isinstance(edit, edits.LockSection):
        return "lock" if edit.locked else "unlock"
    return type(edit).__name__.removesuffix("Section").lower()


def _without_first(pending: list[Pending], edit: edits.Edit) -> list[Pending]:
    for i, p in enumerate(pending):
        if p.edit == edit:
            return pending[:i] + pending[i + 1 :]
    return pending


def inverse(
    edit: edits.Edit, place: Place | None, state: OutlineState, ids_before: frozenset[int]
) -> list[edits.Edit] | str:
    """The edits that undo `edit`, computed from where the node was before it; a reason when none can."""
    if isinstance(edit, edits.AddSection):
        added = [
            i for i in state.node_ids() - ids_before if state.places()[i].node.title == " ".join(edit.title.split())
        ]
        return [edits.DeleteSection(added[0])] if added else "the added section is not in the outline yet"
    if place is None:
        return "the section is gone"
    node = place.node
    if isinstance(edit, edits.RenameSection):
        return [edits.RenameSection(node.id, title=node.title, plan=node.plan)]
    if isinstance(edit, edits.DeleteSection):
        # The deleted text cannot come back; the section returns unwritten, in its old place.
        return [edits.AddSection(node.title, node.plan, place.parent_id, place.index)]
    if isinstance(edit, edits.MoveSection):
        return [edits.MoveSection(node.id, place.parent_id, place.index)]
    if isinstance(edit, edits.LockSection):
        return [edits.LockSection(node.id, locked=node.locked)]
    if isinstance(edit, edits.DeepenSection):
        # There is no "undeepen" edit; locking clears the request and unlocking keeps it cleared.
        return [edits.LockSection(node.id, True), edits.LockSection(node.id, False)]
    return "a rewrite cannot be undone: the old text is discarded when it is applied"
