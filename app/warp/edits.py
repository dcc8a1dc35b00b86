"""The person's outline edits: frozen dataclasses, and pure functions that apply one to a copy of the outline.

Edits name nodes by their stable id (events carry it), never by position. An edit that cannot apply
raises EditError with the reason; the engine then reports it and leaves the outline as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from sala_report.app.warp.citations import Registry, drop_source_keys
from sala_report.app.warp.json_types import JSONObject
from sala_report.app.warp.state import Node, Outline, container, find, subtree_height, walk


class EditError(ValueError):
    """An edit that cannot apply to the outline as it is now."""


@dataclass(frozen=True)
class AddSection:
    """A new unwritten section: top-level when `parent_id` is None; at the end when `index` is None."""

    title: str
    plan: str = ""
    parent_id: int | None = None
    index: int | None = None


@dataclass(frozen=True)
class RenameSection:
    """New title and/or plan; the written text stays (ask for a rewrite to redo it). A new title without a
    plan drops the old plan: it described the old title, and would be written from and exported as such."""

    node_id: int
    title: str | None = None
    plan: str | None = None


@dataclass(frozen=True)
class DeleteSection:
    """Remove a section with everything under it; its citations go with it."""

    node_id: int


@dataclass(frozen=True)
class MoveSection:
    """Put a section (with its subtree) under `parent_id` (None: top level) at `index`."""

    node_id: int
    parent_id: int | None
    index: int


@dataclass(frozen=True)
class LockSection:
    """A locked section is never written, rewritten or expanded by the engine."""

    node_id: int
    locked: bool = True


@dataclass(frozen=True)
class DeepenSection:
    """Expand this section into subsections at the next expand decision (it overrides the model's choice)."""

    node_id: int


@dataclass(frozen=True)
class RewriteSection:
    """Forget this section's text; it is searched and written again when the cursor reaches it."""

    node_id: int


@dataclass(frozen=True)
class ExcludeSource:
    """Never use this source again in the session. Its citations leave the written text (a sentence it alone
    supported goes too, see citations.drop_source_keys) and the sections that cited it are written again when
    the cursor reaches them; with `rewrite` False (or in a locked section) the cleaned text stays instead.
    `label` is what the person saw ("[3] A page"), for the log."""

    source_id: int
    rewrite: bool = True
    label: str = ""


Edit = (
    AddSection
    | RenameSection
    | DeleteSection
    | MoveSection
    | LockSection
    | DeepenSection
    | RewriteSection
    | ExcludeSource
)
EDIT_TYPES: dict[str, type] = {cls.__name__: cls for cls in get_args(Edit)}


def apply_edit(outline: Outline, edit: Edit, *, max_depth: int, registry: Registry | None = None) -> Outline:
    """A new outline with `edit` applied; `outline` itself is left unchanged. ExcludeSource needs the
    session's `registry` (which keys are that source's passages)."""
    if isinstance(edit, ExcludeSource):
        if registry is None:
            raise ValueError("excluding a source needs the session's registry; received None")
        return _exclude(outline, edit, registry)
    if not outline.sections:
        raise EditError("there is no outline yet; sections can be added once the first outline is written")
    new = outline.copy()
    _APPLY[type(edit)](new, edit, max_depth)
    return new


def source_keys(registry: Registry, source_ids: set[int]) -> set[str]:
    """The registry keys of the passages that came from `source_ids`."""
    return {key for key, entry in registry.entries.items() if entry.source_id in source_ids}


def _exclude(outline: Outline, edit: ExcludeSource, registry: Registry) -> Outline:
    keys = source_keys(registry, {edit.source_id})
    if not keys:
        raise EditError(f"source {edit.source_id} was never shown in this session")
    new = outline.copy()
    for loc in walk(new):
        node = loc.node
        if node.content is None:
            continue
        cleaned, _ = drop_source_keys(node.content, keys)
        if cleaned == node.content:
            continue
        if edit.rewrite and not node.locked:
            node.content, node.skipped = None, False
        else:
            node.content = cleaned
    return new


def _node(outline: Outline, node_id: int):
    loc = find(outline, node_id)
    if loc is None:
        raise EditError(f"no section with id {node_id}")
    return loc


def _parent_depth(outline: Outline, parent_id: int | None) -> tuple[Node | None, int]:
    if parent_id is None:
        return None, 0
    loc = _node(outline, parent_id)
    return loc.node, loc.depth


def _title(text: str | None, what: str) -> str:
    text = " ".join((text or "").split())
    if not text:
        raise EditError(f"the {what} must not be empty")
    return text


def _add(outline: Outline, edit: AddSection, max_depth: int) -> None:
    parent, depth = _parent_depth(outline, edit.parent_id)
    if depth + 1 > max_depth:
        raise EditError(f"a section there would be at depth {depth + 1}; the limit is {max_depth}")
    siblings = container(outline, parent)
    node = outline.new_node(_title(edit.title, "title"), " ".join(edit.plan.split()))
    siblings.insert(len(siblings) if edit.index is None else max(0, min(edit.index, len(siblings))), node)


def _rename(outline: Outline, edit: RenameSection, max_depth: int) -> None:
    node = _node(outline, edit.node_id).node
    if edit.title is None and edit.plan is None:
        raise EditError("a rename needs a new title or plan")
    if edit.title is not None:
        title = _title(edit.title, "title")
        if title != node.title and edit.plan is None:
            node.plan = ""
        node.title = title
    if edit.plan is not None:
        node.plan = " ".join(edit.plan.split())


def _delete(outline: Outline, edit: DeleteSection, max_depth: int) -> None:
    loc = _node(outline, edit.node_id)
    siblings = container(outline, loc.parent)
    if loc.parent is None and len(siblings) == 1:
        raise EditError("the last top-level section cannot be deleted")
    del siblings[loc.index]


def _move(outline: Outline, edit: MoveSection, max_depth: int) -> None:
    loc = _node(outline, edit.node_id)
    parent, depth = _parent_depth(outline, edit.parent_id)
    if edit.parent_id is not None and (edit.parent_id == edit.node_id or _inside(loc.node, edit.parent_id)):
        raise EditError("a section cannot move under itself")
    if depth + subtree_height(loc.node) > max_depth:
        raise EditError(f"moving there would make the outline deeper than {max_depth} levels")
    del container(outline, loc.parent)[loc.index]
    if not outline.sections:
        container(outline, loc.parent).insert(loc.index, loc.node)
        raise EditError("the outline must keep at least one top-level section")
    siblings = container(outline, parent)
    siblings.insert(max(0, min(edit.index, len(siblings))), loc.node)


def _inside(node: Node, node_id: int) -> bool:
    return any(c.id == node_id or _inside(c, node_id) for c in node.children)


def _lock(outline: Outline, edit: LockSection, max_depth: int) -> None:
    node = _node(outline, edit.node_id).node
    node.locked = edit.locked
    if edit.locked:
        node.deepen = False


def _deepen(outline: Outline, edit: DeepenSection, max_depth: int) -> None:
    loc = _node(outline, edit.node_id)
    if loc.node.locked:
        raise EditError("the section is locked; unlock it first")
    if loc.node.children:
        raise EditError("the section already has subsections")
    if loc.depth >= max_depth:
        raise EditError(f"the section is at depth {loc.depth}; subsections would pass the limit of {max_depth}")
    loc.node.deepen = True


def _rewrite(outline: Outline, edit: RewriteSection, max_depth: int) -> None:
    node = _node(outline, edit.node_id).node
    if node.locked:
        raise EditError("the section is locked; unlock it first")
    node.content = None
    node.skipped = False


_APPLY = {
    AddSection: _add,
    RenameSection: _rename,
    DeleteSection: _delete,
    MoveSection: _move,
    LockSection: _lock,
    DeepenSection: _deepen,
    RewriteSection: _rewrite,
}


def to_dict(edit: Edit) -> JSONObject:
    return {"type": type(edit).__name__, **dataclasses.asdict(edit)}


def from_dict(data: JSONObject) -> Edit:
    fields = dict(data)
    cls = EDIT_TYPES.get(fields.pop("type", ""))
    if cls is None:
        raise ValueError(f"unknown edit type in {data!r}; expected one of {', '.join(EDIT_TYPES)}")
    return cls(**fields)


def describe(edit: Edit, names: Mapping[int, str] | None = None) -> str:
    """The edit in a person's words. `names` maps node ids to what the screen shows ("4 Storage"); without
    it (or for a node it lacks) a section is named by its internal id, which no screen shows."""

    def name(node_id: int | None) -> str:
        if node_id is None:
            return "the top level"
        return (names or {}).get(node_id) or f"the section with id {node_id}"

    if isinstance(edit, AddSection):
        where = f" under {name(edit.parent_id)}" if edit.parent_id is not None else ""
        return f"add '{edit.title}'{where}"
    if isinstance(edit, RenameSection):
        changes = [f"title '{edit.title}'"] if edit.title is not None else []
        changes += ["a new plan"] if edit.plan is not None else []
        return f"rename {name(edit.node_id)}: {' and '.join(changes) or 'no change'}"
    if isinstance(edit, MoveSection):
        return f"move {name(edit.node_id)} to position {edit.index + 1} under {name(edit.parent_id)}"
    if isinstance(edit, LockSection):
        return f"{'lock' if edit.locked else 'unlock'} {name(edit.node_id)}"
    if isinstance(edit, ExcludeSource):
        return f"exclude source {edit.label or edit.source_id}" + (
            "" if edit.rewrite else " (text kept, not rewritten)"
        )
    verb = {DeleteSection: "delete", DeepenSection: "deepen", RewriteSection: "rewrite"}[type(edit)]
    return f"{verb} {name(edit.node_id)}"
