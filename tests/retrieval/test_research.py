"""Retriever.gather end to end: a fake search backend pointing at loopback pages, the real fetcher and store."""

from __future__ import annotations

import threading

from sala_report.retrieval import (
    FetchConfig,
    Fetcher,
    FetchResult,
    Retriever,
    SearchDegraded,
    SearchDone,
    SearchOutcome,
    SearchResult,
    SourceFailed,
    SourceReused,
    SourceStored,
    Store,
    store_fetched,
)
from sala_report.retrieval.store import SourceRecord

FAST = FetchConfig(allow_private_addresses=True, connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=3.0)


class ScriptedSearch:
    """A SearchBackend answering each query with fixed URLs (or a degraded outcome, or an exception)."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.queries: list[str] = []

    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        self.queries.append(query)
        answer = self.answers[query]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return SearchOutcome(query, [], degraded=answer)
        return SearchOutcome(query, [SearchResult(u, u, "") for u in answer], engine="scripted")


def test_gather_searches_fetches_stores_and_ranks(server):
    store = Store.open(":memory:")
    events = []
    search = ScriptedSearch(
        {
            "urban fox corridors": [server.base + "/article", server.base + "/image"],
            "tidal stream cost": [server.base + "/report.pdf", server.base + "/article"],
        }
    )
    result = Retriever(store, search=search, fetcher=Fetcher(FAST)).gather(
        ["urban fox corridors", "tidal stream cost"], 4, on_event=events.append
    )
    assert result.degraded is None
    assert len(result.new_source_ids) == 2 and result.web_source_ids == result.new_source_ids
    locations = {p.location for p in result.passages}
    assert locations == {server.base + "/article", server.base + "/report.pdf"}
    assert all(p.source_id in result.new_source_ids for p in result.passages)
    kinds = [type(e) for e in events]
    assert kinds.count(SearchDone) == 2 and kinds.count(SourceStored) == 2 and kinds.count(SourceFailed) == 1
    failed = next(e for e in events if isinstance(e, SourceFailed))
    assert failed.location.endswith("/image") and "image/png" in failed.reason


def test_second_gather_reuses_stored_pages_and_skips_permanent_failures(server):
    store = Store.open(":memory:")
    search = ScriptedSearch({"q": [server.base + "/article", server.base + "/image"]})
    Retriever(store, search=search, fetcher=Fetcher(FAST)).gather(["q"], 3)
    hits_before = len(server.hits)
    events = []
    result = Retriever(store, search=search, fetcher=Fetcher(FAST)).gather(["q"], 3, on_event=events.append)
    assert len(server.hits) == hits_before  # nothing fetched again: the article is stored, the image refused
    assert result.new_source_ids == set() and len(result.web_source_ids) == 1
    assert any(isinstance(e, SourceReused) for e in events)


def test_given_source_ids_join_the_pool_and_others_stay_out():
    store = Store.open(":memory:")
    mine, _ = store.put_source(SourceRecord("/d/mine.md", "file", "Mine", "x", "h1", ["Glacier melt in my notes."]))
    other, _ = store.put_source(SourceRecord("/d/other.md", "file", "Other", "x", "h2", ["Glacier melt elsewhere."]))
    result = Retriever(store).gather(["glacier melt"], 5, source_ids={mine})
    assert {p.source_id for p in result.passages} == {mine}
    everything = Retriever(store).gather(["glacier melt"], 5)  # no search, no ids: the whole store, offline
    assert {p.source_id for p in everything.passages} == {mine, other}


def test_degraded_search_still_returns_stored_passages():
    store = Store.open(":memory:")
    sid, _ = store.put_source(SourceRecord("/d/a.md", "file", "A", "x", "h", ["Monsoon rainfall records."]))
    events = []
    search = ScriptedSearch({"monsoon rainfall": "web search failed (duckduckgo: rate limited)"})
    result = Retriever(store, search=search, fetcher=Fetcher(FAST)).gather(
        ["monsoon rainfall"], 3, source_ids={sid}, on_event=events.append
    )
    assert result.degraded == "web search failed (duckduckgo: rate limited)"
    assert [p.source_id for p in result.passages] == [sid]
    assert isinstance(events[0], SearchDegraded)


def test_a_search_backend_that_raises_does_not_end_the_run():
    store = Store.open(":memory:")
    result = Retriever(store, search=ScriptedSearch({"q": ConnectionError("offline")})).gather(["q"], 3)
    assert "ConnectionError: offline" in result.degraded and result.passages == []


def test_unreachable_pages_make_gather_degraded_not_raise(silent_port):
    store = Store.open(":memory:")
    search = ScriptedSearch({"q": [f"http://127.0.0.1:{silent_port}/a", f"http://127.0.0.1:{silent_port}/b"]})
    result = Retriever(store, search=search, fetcher=Fetcher(FAST)).gather(["q"], 3)
    assert result.degraded.startswith("could not fetch any of 2 pages")
    assert {s.failure for s in store.sources()} == {"timeout"}


def test_private_pages_from_search_results_are_refused_by_default(server):
    store = Store.open(":memory:")
    search = ScriptedSearch({"q": [server.base + "/article"]})
    result = Retriever(store, search=search, fetcher=Fetcher(FetchConfig())).gather(["q"], 3)
    assert result.passages == [] and result.new_source_ids == set()
    assert store.sources()[0].failure == "refused"


def test_cancel_stops_gather_quickly(server):
    store = Store.open(":memory:")
    cancel = threading.Event()
    search = ScriptedSearch({"q": [server.base + "/drip"]})
    fetcher = Fetcher(FetchConfig(allow_private_addresses=True, total_timeout_s=30.0, read_timeout_s=30.0))
    threading.Timer(0.3, cancel.set).start()
    result = Retriever(store, search=search, fetcher=fetcher).gather(["q"], 3, cancel=cancel)
    assert result.degraded == "cancelled"
    assert store.sources() == []  # a cancelled fetch records nothing


def test_add_url_refetches_and_keeps_a_good_copy_on_failure(server):
    store = Store.open(":memory:")
    retriever = Retriever(store, fetcher=Fetcher(FAST))
    source = retriever.add_url(server.base + "/notes.md")
    assert source.status == "ok" and "Owls" in source.text
    assert retriever.add_url(server.base + "/notes.md").id == source.id
    failed = FetchResult(source.location, source.location, failure="timeout", error="slow")
    kept = store_fetched(store, failed)
    assert kept.status == "ok" and kept.text == source.text


def test_local_search_backend_gathers_offline():
    from sala_report.retrieval import LocalSearch

    store = Store.open(":memory:")
    sid, _ = store.put_source(SourceRecord("/d/k.md", "file", "Kelp", "x", "h", ["Kelp forests store carbon."]))
    result = Retriever(store, search=LocalSearch(store)).gather(["kelp carbon"], 3, source_ids=set())
    assert result.degraded is None and result.web_source_ids == {sid}
    assert [p.source_id for p in result.passages] == [sid]
