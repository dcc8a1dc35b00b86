"""The small records retrieval hands to the rest of the app: sources, passages, search results, reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SourceKind = Literal["web", "file"]
# ok: text and chunks stored; empty: read fine but no text; failed: could not be read; deleted: file gone
SourceStatus = Literal["ok", "empty", "failed", "deleted"]


@dataclass(frozen=True)
class Passage:
    """One ranked chunk with everything a citation needs."""

    chunk_id: str
    source_id: int
    text: str
    title: str
    location: str  # URL or file path
    kind: SourceKind
    score: float  # higher is better (negated FTS5 bm25)
    # the Markdown headings the chunk sits under, outermost first; empty outside any heading
    heading_path: tuple[str, ...] = ()

    @property
    def heading(self) -> str:
        """The chunk's own (innermost) heading, or ''."""
        return self.heading_path[-1] if self.heading_path else ""


@dataclass(frozen=True)
class Source:
    id: int
    location: str
    kind: SourceKind
    title: str
    status: SourceStatus
    error: str | None
    # why it failed: refused, invalid_url, timeout, network, http, too_large, content_type, redirects, extract
    failure: str | None
    fetched_at: str  # ISO 8601, UTC
    content_hash: str | None
    chunk_count: int
    metadata: dict[str, Any]
    text: str


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str
    # what a paper search knows of the work (authors, date, doi, arxiv_id, journal); kept with the source
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchOutcome:
    """What one query returned. `degraded` says, for a person, why there is less than asked for."""

    query: str
    results: list[SearchResult]
    engine: str | None = None  # the engine that answered, None when none did
    cached: bool = False
    degraded: str | None = None
    errors: tuple[str, ...] = ()


@dataclass
class IngestReport:
    """Counts of one folder ingest; `source_ids` are the folder's readable sources after it."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    source_ids: set[int] = field(default_factory=set)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, message): read, but failed
    # (path, why): not read by rule: an unsupported type, not a regular file, over the size cap, a link
    # out of the folder or a broken one
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class GatherResult:
    passages: list[Passage]
    new_source_ids: set[int]  # pages this call fetched and stored
    degraded: str | None
    web_source_ids: set[int] = field(default_factory=set)  # every readable page the searches led to
