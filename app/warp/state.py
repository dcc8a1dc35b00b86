"""The report outline as a tree (warp.md §1.3) and the cursor over it: pure data and functions, no I/O.

Nodes carry a stable integer id, so the person's edits and the journal can name a node while
positions (`section-2.1`) shift as sections are added, moved or deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    id: int
    title: str
    plan: str
    content: str | None = None  # Markdown prose citing `\cite{textidN}`; None while unwritten
    children: list[Node] = field(default_factory=list)
    locked: bool = False  # the engine never writes, rewrites or expands a locked node
    deepen: bool = False  # the person asked for this node to be expanded at the next decision
    skipped: bool = False  # writing failed every retry; the report shows its plan instead


@dataclass
class Outline:
    title: str = ""
    sections: list[Node] = field(default_factory=list)
    next_id: int = 1

    def copy(self) -> Outline:
        return copy.deepcopy(self)

    def new_node(self, title: str, plan: str) -> Node:
        node = Node(self.next_id, title, plan)
        self.next_id += 1
        return node


@dataclass(frozen=True)
class Located:
    """A node with where it sits: `number` is "2.1", `depth` is 1 for top-level sections."""

    node: Node
    number: str
    depth: int
    parent: Node | None
    index: int  # within the parent's children (or the top-level sections)

    @property
    def position(self) -> str:
        return f"section-{self.number}"


def walk(outline: Outline) -> Iterator[Located]:
    """Every node in depth-first pre-order: a parent comes before its children."""

    def visit(nodes: list[Node], prefix: str, depth: int, parent: Node | None) -> Iterator[Located]:
        for i, node in enumerate(nodes):
            number = f"{prefix}{i + 1}"
            yield Located(node, number, depth, parent, i)
            yield from visit(node.children, number + ".", depth + 1, node)

    return visit(outline.sections, "", 1, None)


def find(outline: Outline, node_id: int) -> Located | None:
    return next((loc for loc in walk(outline) if loc.node.id == node_id), None)


def at_position(outline: Outline, position: str) -> Located | None:
    return next((loc for loc in walk(outline) if loc.position == position), None)


def cursor(outline: Outline) -> Located | None:
    """The next node to write (warp.md §1.2): the first in pre-order without content, skipping locked
    and given-up nodes. None once everything writable is written."""
    return next((loc for loc in walk(outline) if is_pending(loc.node)), None)


def is_pending(node: Node) -> bool:
    return node.content is None and not node.locked and not node.skipped


def subtree_height(node: Node) -> int:
    """1 for a leaf, 2 for a node with leaf children, ..."""
    return 1 + max((subtree_height(c) for c in node.children), default=0)


def expandable(outline: Outline, max_depth: int) -> list[Located]:
    """Nodes the expand decision may split: above the depth cap, without children, not locked."""
    return [loc for loc in walk(outline) if loc.depth < max_depth and not loc.node.children and not loc.node.locked]


def deepen_requests(outline: Outline, max_depth: int) -> list[Located]:
    return [loc for loc in expandable(outline, max_depth) if loc.node.deepen]


def is_complete(outline: Outline) -> bool:
    """Every node has text (locked nodes count as the person's choice)."""
    return bool(outline.sections) and all(loc.node.content is not None or loc.node.locked for loc in walk(outline))


def container(outline: Outline, parent: Node | None) -> list[Node]:
    return outline.sections if parent is None else parent.children


def to_dict(outline: Outline) -> dict[str, Any]:
    def node(n: Node) -> dict[str, Any]:
        return {
            "id": n.id,
            "title": n.title,
            "plan": n.plan,
            "content": n.content,
            "locked": n.locked,
            "deepen": n.deepen,
            "skipped": n.skipped,
            "children": [node(c) for c in n.children],
        }

    return {"title": outline.title, "next_id": outline.next_id, "sections": [node(n) for n in outline.sections]}


def from_dict(data: dict[str, Any]) -> Outline:
    def node(d: dict[str, Any]) -> Node:
        return Node(
            int(d["id"]),
            d["title"],
            d["plan"],
            d.get("content"),
            [node(c) for c in d.get("children", [])],
            bool(d.get("locked")),
            bool(d.get("deepen")),
            bool(d.get("skipped")),
        )

    return Outline(data.get("title", ""), [node(n) for n in data.get("sections", [])], int(data.get("next_id", 1)))
