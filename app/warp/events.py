"""What the engine tells front ends: frozen dataclasses, delivered to subscribers on the engine's thread.

Every event except TokenDelta is also written to the session's journal (warp_events), in the same
transaction as the step that caused it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp.state import Node, Outline, walk


@dataclass(frozen=True)
class NodeView:
    id: int
    number: str  # "2.1"
    title: str
    plan: str
    written: bool
    locked: bool
    deepen: bool
    skipped: bool
    children: tuple["NodeView", ...]


@dataclass(frozen=True)
class OutlineView:
    title: str
    sections: tuple[NodeView, ...]


def outline_view(outline: Outline) -> OutlineView:
    numbers = {loc.node.id: loc.number for loc in walk(outline)}

    def view(node: Node) -> NodeView:
        return NodeView(node.id, numbers[node.id], node.title, node.plan, node.content is not None, node.locked,
                        node.deepen, node.skipped, tuple(view(c) for c in node.children))  # fmt: skip

    return OutlineView(outline.title, tuple(view(n) for n in outline.sections))


@dataclass(frozen=True)
class RunStarted:
    session_id: str
    question: str
    resumed: bool
    step: int


@dataclass(frozen=True)
class StepStarted:
    session_id: str
    step: int
    kind: str  # "search" | "init-plan" | "write" | "extend"
    node_id: int | None  # the section worked on; None for the outline as a whole
    position: str | None  # "section-2.1"
    attempt: int  # 1 for a first try, 2.. for retries after a rejected answer


@dataclass(frozen=True)
class TokenDelta:
    session_id: str
    step: int
    text: str
    restart: bool = False  # the backend retried: drop what this step streamed so far


@dataclass(frozen=True)
class ActionRejected:
    """The model's answer failed parsing or validation; `error` is fed back to the next try."""

    session_id: str
    step: int
    kind: str
    error: str
    attempt: int
    will_retry: bool


@dataclass(frozen=True)
class SearchFinished:
    session_id: str
    step: int
    node_id: int | None
    keywords: tuple[str, ...]
    passages: int
    degraded: str | None


@dataclass(frozen=True)
class SourceAdded:
    """A stored source first shown to the model in this session."""

    session_id: str
    step: int
    source_id: int
    title: str
    location: str
    kind: str


@dataclass(frozen=True)
class OutlineChanged:
    session_id: str
    step: int
    reason: str  # "init-plan" | "expand" | "edit" | "skip"
    outline: OutlineView


@dataclass(frozen=True)
class SectionWritten:
    """`markdown` cites as [N], N being the registry number of textidN (the final report renumbers)."""

    session_id: str
    step: int
    node_id: int
    position: str
    title: str
    markdown: str
    citations: int
    removed_citations: int


@dataclass(frozen=True)
class SectionSkipped:
    session_id: str
    step: int
    node_id: int
    reason: str


@dataclass(frozen=True)
class CitationFlagged:
    """A cited sentence shares few words with its passage: weak support, kept but marked."""

    session_id: str
    step: int
    node_id: int
    key: str
    sentence: str
    score: float


@dataclass(frozen=True)
class EditApplied:
    session_id: str
    step: int
    edit: Any  # one of sala_report.app.warp.edits
    description: str


@dataclass(frozen=True)
class EditRejected:
    session_id: str
    step: int
    edit: Any
    reason: str


@dataclass(frozen=True)
class Paused:
    session_id: str
    step: int


@dataclass(frozen=True)
class Unpaused:
    session_id: str
    step: int


@dataclass(frozen=True)
class Checkpointed:
    session_id: str
    step: int
    phase: str  # the phase the next step runs


@dataclass(frozen=True)
class Finished:
    session_id: str
    status: str  # "done" | "partial" | "cancelled"
    steps: int
    reason: str


@dataclass(frozen=True)
class Failed:
    session_id: str
    step: int
    error: str
    hint: str | None


def to_record(event: Any) -> tuple[str, dict[str, Any]]:
    """(type name, JSON-able payload) for the journal."""
    payload = dataclasses.asdict(event)
    if "edit" in payload:
        payload["edit"] = {"type": type(event.edit).__name__, **payload["edit"]}
    return type(event).__name__, payload
