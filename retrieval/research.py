"""The evidence pipeline the research engine calls: search, fetch, extract, chunk, store, rank.

`Retriever.gather` never raises for network trouble; what went wrong comes back as `degraded` and as
events, and the passages it can still find (from the store) are returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable

from sala_report.retrieval.chunk import ChunkConfig, split_text
from sala_report.retrieval.domains import DomainFilter
from sala_report.retrieval.errors import EmptyDocument, ExtractionError
from sala_report.retrieval.events import (
    FetchStarted,
    SearchDegraded,
    SearchDone,
    SourceFailed,
    SourceReused,
    SourceStored,
)
from sala_report.retrieval.fetch import FetchConfig, Fetcher, FetchResult, without_fragment
from sala_report.retrieval.search import SearchBackend
from sala_report.retrieval.store import SourceRecord, Store
from sala_report.retrieval.types import GatherResult, Passage, SearchOutcome, Source
from sala_report.retrieval.worker import extract_within

# Failures worth another try later; the others (refused address, wrong type, too large, no text) are
# properties of the page and are not retried by searches.
TRANSIENT_FAILURES = ("timeout", "network", "http")


class Retriever:
    def __init__(
        self,
        store: Store,
        search: SearchBackend | None = None,
        fetcher: Fetcher | None = None,
        *,
        chunk_config: ChunkConfig = ChunkConfig(),
        retry_failed_after_s: float = 3600.0,
        domains: DomainFilter | None = None,
    ):
        self.store = store
        self.domains = domains  # the person's include/exclude lists, applied to web results before fetching
        self.search = search
        self.fetcher = fetcher
        self.chunk_config = chunk_config
        self.retry_failed_after_s = retry_failed_after_s

    def gather(
        self,
        queries: list[str],
        k: int,
        *,
        source_ids: set[int] | None = None,
        on_event: Callable[[object], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GatherResult:
        """Search the web for each query (when a search backend is set), store the new pages, and rank
        passages from `source_ids` plus the pages the searches led to (the whole store when None)."""
        emit = on_event or (lambda event: None)
        problems: list[str] = []
        web_ids: set[int] = set()
        to_fetch: dict[str, dict] = {}  # URL -> what the search engine knew of the work (papers)
        filtered_out = 0
        queries = [q for q in queries if q.strip()]
        if self.search is not None:
            for query in queries:
                if cancel is not None and cancel.is_set():
                    break
                outcome = self._search(query)
                if outcome.degraded:
                    emit(SearchDegraded(query, outcome.degraded))
                    problems.append(outcome.degraded)
                else:
                    emit(SearchDone(query, outcome.engine, len(outcome.results), outcome.cached))
                for result in outcome.results:
                    if self.domains is not None and not self.domains.allows(result.url):
                        filtered_out += 1
                        continue
                    self._plan(result.url, web_ids, to_fetch, emit, result.metadata)
        if filtered_out and not to_fetch and not web_ids:
            problems.append(f"the domain filter (include/exclude domains) left none of the {filtered_out} web results")
        new_ids: set[int] = set()
        if to_fetch and not (cancel is not None and cancel.is_set()):
            if self.fetcher is None:
                problems.append(f"{len(to_fetch)} pages found but not read (no fetcher configured)")
            else:
                new_ids = self._fetch(to_fetch, emit, cancel, problems)
                web_ids |= new_ids
        if cancel is not None and cancel.is_set():
            problems.append("cancelled")
        pool = None if source_ids is None else set(source_ids) | web_ids
        passages = self._rank(queries, k, pool)
        degraded = "; ".join(dict.fromkeys(problems)) or None
        return GatherResult(passages=passages, new_source_ids=new_ids, degraded=degraded, web_source_ids=web_ids)

    def add_url(self, url: str, *, cancel: threading.Event | None = None) -> Source:
        """Fetch `url` now (even if stored before) and store it; the returned Source's status says how it went."""
        fetcher = self.fetcher or Fetcher()
        (result,) = fetcher.fetch_all([url], cancel=cancel)
        return store_fetched(self.store, result, self.chunk_config, fetch_config=fetcher.config)

    def _search(self, query: str) -> SearchOutcome:
        try:
            return self.search.search(query)
        except Exception as e:  # a backend that breaks its promise still must not end the run
            return SearchOutcome(query, [], degraded=f"search failed: {type(e).__name__}: {e}")

    def _plan(self, url: str, web_ids: set[int], to_fetch: dict[str, dict], emit, found: dict | None = None) -> None:
        url = without_fragment(url)  # page#a and page#b are one source
        existing = self.store.source_by_location(url)
        if existing is None or self._worth_retrying(existing):
            to_fetch.setdefault(url, found or {})
        elif existing.status == "ok":
            if existing.id not in web_ids:
                emit(SourceReused(existing.id, url))
            web_ids.add(existing.id)

    def _worth_retrying(self, source: Source) -> bool:
        if source.status != "failed" or source.failure not in TRANSIENT_FAILURES:
            return False
        age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(source.fetched_at)
        return age.total_seconds() >= self.retry_failed_after_s

    def _fetch(self, urls: dict[str, dict], emit, cancel, problems: list[str]) -> set[int]:
        for url in urls:
            emit(FetchStarted(url))
        results = self.fetcher.fetch_all(list(urls), cancel=cancel)
        stored: set[int] = set()
        failures = []
        for result in results:
            if result.failure == "cancelled":
                continue
            source = store_fetched(
                self.store, result, self.chunk_config, work=urls.get(result.url), fetch_config=self.fetcher.config
            )
            if source.status == "ok":
                stored.add(source.id)
                emit(SourceStored(source.id, source.location, source.title, source.chunk_count))
            else:
                failures.append(result)
                emit(SourceFailed(result.url, source.error or "unreadable"))
        network = [r for r in failures if r.failure in TRANSIENT_FAILURES]
        if not stored and network and len(network) == len(results):
            problems.append(f"could not fetch any of {len(results)} pages (first: {network[0].error})")
        return stored

    def _rank(self, queries: list[str], k: int, pool: set[int] | None) -> list[Passage]:
        """Interleave each query's best passages, so every query is represented in the `k` returned."""
        per_query = [self.store.passages(q, k, source_ids=pool) for q in queries]
        merged: dict[str, Passage] = {}
        for depth in range(k):
            for ranked in per_query:
                if depth < len(ranked) and len(merged) < k:
                    merged.setdefault(ranked[depth].chunk_id, ranked[depth])
        return list(merged.values())


def store_fetched(
    store: Store,
    result: FetchResult,
    chunk_config: ChunkConfig = ChunkConfig(),
    *,
    work: dict | None = None,
    fetch_config: FetchConfig | None = None,
) -> Source:
    """Record a fetch: extract, chunk and store a readable page, or record the failure.

    A failed refetch of a page already stored keeps the stored copy. `work` is what a paper search knew of
    the page (doi, arxiv_id, authors, date, journal); it is kept under the metadata key "work" for citations.
    """
    existing = store.source_by_location(result.url)
    meta = {"final_url": result.final_url, "http_status": result.status_code, "content_type": result.content_type}
    if not result.ok:
        if existing is not None and existing.status == "ok":
            return existing
        source_id = store.put_failure(
            result.url,
            "web",
            status="failed",
            failure=result.failure or "network",
            error=result.error or "failed",
            metadata=meta,
        )
        return store.source(source_id)
    digest = hashlib.sha256(result.body).hexdigest()
    if existing is not None and existing.status == "ok" and existing.content_hash == digest:
        return existing
    try:
        limits = fetch_config or FetchConfig()  # extraction stays within its size and time limits
        extracted = extract_within(
            result.body,
            result.kind or "html",
            url=result.final_url,
            charset=result.charset,
            timeout_s=limits.extract_timeout_s,
            max_html_chars=limits.max_html_chars,
        )
    except ExtractionError as e:
        status = "empty" if isinstance(e, EmptyDocument) else "failed"
        source_id = store.put_failure(
            result.url, "web", status=status, failure="extract", error=str(e), content_hash=digest, metadata=meta
        )
        return store.source(source_id)
    record = SourceRecord(
        location=result.url,
        kind="web",
        title=extracted.title or result.final_url,
        text=extracted.text,
        content_hash=digest,
        chunks=split_text(extracted.text, chunk_config),
        metadata={**extracted.metadata, **meta, "bytes": len(result.body), **({"work": work} if work else {})},
    )
    source_id, _ = store.put_source(record)
    return store.source(source_id)
