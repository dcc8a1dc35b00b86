"""Events `Retriever.gather` reports through `on_event`, so front ends can show progress without polling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchDone:
    query: str
    engine: str | None
    results: int
    cached: bool


@dataclass(frozen=True)
class SearchDegraded:
    query: str
    reason: str


@dataclass(frozen=True)
class FetchStarted:
    url: str


@dataclass(frozen=True)
class SourceStored:
    source_id: int
    location: str
    title: str
    chunks: int


@dataclass(frozen=True)
class SourceFailed:
    location: str
    reason: str


@dataclass(frozen=True)
class SourceReused:
    """A page the search found that the store already holds; nothing was fetched."""

    source_id: int
    location: str
