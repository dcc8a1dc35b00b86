"""What the engine tells front ends: frozen dataclasses, delivered to subscribers on the engine's thread.

The events a step or an edit causes are also written to the session's journal (warp_events), in the same
transaction; TokenDelta and the engine's own announcements (RunStarted, Paused, Unpaused,
ReferencesChanged) are not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sala_report.app.warp.edits import Edit
from sala_report.app.warp.json_types import JSONObject
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
    children: tuple[NodeView, ...]


@dataclass(frozen=True)
class OutlineView:
    title: str
    sections: tuple[NodeView, ...]


def outline_view(outline: Outline) -> OutlineView:
    numbers = {loc.node.id: loc.number for loc in walk(outline)}

    def view(node: Node) -> NodeView:
        return NodeView(
            node.id,
            numbers[node.id],
            node.title,
            node.plan,
            node.content is not None,
            node.locked,
            node.deepen,
            node.skipped,
            tuple(view(c) for c in node.children),
        )

    return OutlineView(outline.title, tuple(view(n) for n in outline.sections))


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
class RunStarted:
    """A resumed session comes with what it has so far, so a front end can show it before any step."""

    session_id: str
    question: str
    resumed: bool
    step: int
    max_steps: int = 0  # the step budget (a finished session: the one it ran under; 0: not recorded)
    web: bool | None = None  # whether it searches the web (None: not recorded)
    finished: bool = False  # it ended before; run() only reports that
    outline: OutlineView | None = None
    sources: tuple[SourceAdded, ...] = ()
    references: tuple[tuple[str, int, int], ...] = ()  # as ReferencesChanged


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
class OutlineChanged:
    session_id: str
    step: int
    reason: str  # "init-plan" | "expand" | "edit" | "skip"
    outline: OutlineView


@dataclass(frozen=True)
class SectionWritten:
    """`markdown` is the section as the exported report shows it after this step ([n] numbers, weak citations
    marked); `content` the same text with its `\\cite{textidN}` keys (later steps and edits can renumber: see
    ReferencesChanged)."""

    session_id: str
    step: int
    node_id: int
    position: str
    title: str
    markdown: str
    citations: int
    removed_citations: int
    content: str = ""


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
    edit: Edit
    description: str


@dataclass(frozen=True)
class EditRejected:
    session_id: str
    step: int
    edit: Edit
    reason: str


@dataclass(frozen=True)
class Paused:
    """The engine has stopped; `redo_step` is the step the pause interrupted (nothing of it was kept)."""

    session_id: str
    step: int
    redo_step: int | None = None


@dataclass(frozen=True)
class Unpaused:
    session_id: str
    step: int


@dataclass(frozen=True)
class ReferencesChanged:
    """The report's citation numbers changed (a section was written, moved, deleted or rewritten).
    `references`: (registry key, source id, n) for every cited passage; n is the [n] of the export."""

    session_id: str
    step: int
    references: tuple[tuple[str, int, int], ...]


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


# Everything the engine itself announces (subscribers also get retrieval's progress
# events: retriever.RetrievalEvent).
Event = (
    RunStarted
    | StepStarted
    | TokenDelta
    | ActionRejected
    | SearchFinished
    | SourceAdded
    | OutlineChanged
    | SectionWritten
    | SectionSkipped
    | CitationFlagged
    | EditApplied
    | EditRejected
    | Paused
    | Unpaused
    | ReferencesChanged
    | Checkpointed
    | Finished
    | Failed
)


def to_record(event: Event) -> tuple[str, JSONObject]:
    """(type name, JSON-able payload) for the journal."""
    payload = dataclasses.asdict(event)
    if "edit" in payload:
        payload["edit"] = {"type": type(event.edit).__name__, **payload["edit"]}
    return type(event).__name__, payload
