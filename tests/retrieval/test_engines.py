"""arXiv, OpenAlex and SearXNG through WebSearch, against loopback servers that speak each API (an Atom
feed, JSON) with answers shaped like the real ones (tests/data/retrieval/engines/); only the clock is patched.

The engines' API addresses are the person's settings, so pointing them at loopback needs no change to the
private-address guard; the pages their results lead to still go through it (the last tests).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sala_report.retrieval import (
    FetchConfig,
    Fetcher,
    RateLimiter,
    Retriever,
    SearchConfig,
    SearchDone,
    SourceFailed,
    Store,
    WebSearch,
)
from sala_report.retrieval.search import SearchOutcome, SearchResult

ENGINES = Path(__file__).resolve().parents[1] / "data" / "retrieval" / "engines"


class ApiServer(ThreadingHTTPServer):
    """Answers each path from a script of (status, content type, body, headers); the last entry repeats.
    Records every request's query parameters."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ApiHandler)
        self.script: dict[str, list[tuple]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, path: str, *answers: tuple) -> None:
        self.script[path] = list(answers)
        self.requests.clear()

    def params(self, i: int = -1) -> dict[str, str]:
        return {k: v[0] for k, v in self.requests[i][1].items()}


class ApiHandler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        self.server.requests.append((parts.path, parse_qs(parts.query)))
        queue = self.server.script.get(parts.path) or [(404, "text/plain", b"not found", {})]
        status, content_type, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(body):
            body = body()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def api():
    server = ApiServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def ok(name: str, content_type: str) -> tuple:
    return (200, content_type, (ENGINES / name).read_bytes(), {})


ATOM = "application/atom+xml; charset=utf-8"


def make_search(api: ApiServer, clock, engines: tuple[str, ...], **config) -> tuple[WebSearch, dict[str, float]]:
    """A WebSearch whose engines live on `api`; returns it and the interval each engine's limiter got."""
    intervals: dict[str, float] = {}

    def limiter_for(engine: str, interval: float) -> RateLimiter:
        intervals[engine] = interval
        return RateLimiter(interval, clock=clock.time, sleep=clock.sleep)

    cfg = SearchConfig(
        engines=engines,
        arxiv_url=api.base + "/api/query",
        openalex_url=api.base + "/works",
        searxng_url=api.base,
        **{"timeout_s": 2.0, **config},
    )
    return WebSearch(cfg, limiter_for=limiter_for, sleep=clock.sleep), intervals


def test_arxiv_feed_becomes_versionless_abs_pages_with_paper_metadata(api, clock):
    api.answer("/api/query", ok("arxiv_feed.xml", ATOM))
    search, intervals = make_search(api, clock, ("arxiv",))
    outcome = search.search("heat pump  (efficiency)", max_results=5)
    assert outcome.engine == "arxiv" and outcome.degraded is None
    assert [r.url for r in outcome.results] == [
        "https://arxiv.org/abs/2403.01234",
        "https://arxiv.org/abs/cond-mat/0102536",
    ]
    first = outcome.results[0]
    assert first.title == "Field Performance of Air-Source Heat Pumps in Sub-Arctic Homes"  # unwrapped
    assert first.snippet.startswith("We measured the seasonal coefficient of performance of forty")
    assert first.metadata == {
        "arxiv_id": "2403.01234",
        "type": "paper",
        "authors": ["Ingrid Solberg", "Kari Nordmann"],
        "date": "2024-03-02",
        "doi": "10.1016/j.enbuild.2024.114001",
        "journal": "Energy and Buildings 310 (2024) 114001",
    }
    params = api.params()
    assert params["search_query"] == "all:heat AND all:pump AND all:efficiency"
    assert params["max_results"] == "5" and params["sortBy"] == "relevance"
    assert intervals == {"arxiv": 3.0}  # arXiv's terms: one call every three seconds
    search.search("second query")
    assert clock.sleeps == [3.0]


def test_arxiv_error_entry_is_a_clear_failure_not_a_result(api, clock):
    api.answer("/api/query", ok("arxiv_error.xml", ATOM))
    outcome = make_search(api, clock, ("arxiv",))[0].search("q")
    assert outcome.results == []
    assert "arXiv rejected the query: max_results must be non-negative" in outcome.degraded
    assert len(api.requests) == 1  # not retried: asking again gets the same error


def test_arxiv_throttling_backs_off_for_as_long_as_asked_then_succeeds(api, clock):
    api.answer(
        "/api/query",
        (503, "text/plain", b"Rate exceeded.", {"Retry-After": "7"}),
        (200, "text/plain", b"Rate exceeded.", {}),
        ok("arxiv_feed.xml", ATOM),
    )
    outcome = make_search(api, clock, ("arxiv",))[0].search("q")
    assert len(outcome.results) == 2
    assert [s for s in clock.sleeps if s != 3.0] == [7.0, 4.0]  # Retry-After beat the 2 s backoff; then 2 * 2


def test_openalex_prefers_open_access_copies_and_keeps_the_doi(api, clock):
    api.answer("/works", ok("openalex_works.json", "application/json"))
    search, _ = make_search(api, clock, ("openalex",), openalex_api_key="k-123", openalex_mailto="me@example.org")
    outcome = search.search("cold climate heat pumps", max_results=5)
    assert [r.url for r in outcome.results] == [
        "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC11000001",  # the open-access copy, readable
        "https://doi.org/10.1016/j.apenergy.2019.02.001",  # closed: the DOI
    ]  # the work with no address at all is left out
    first, second = outcome.results
    assert first.snippet == "Heat pumps work in the cold."  # rebuilt from the inverted index
    assert first.metadata["doi"] == "10.1038/s41560-024-01234-5"
    assert first.metadata["authors"] == ["Mei Chen", "Lars Holm"] and first.metadata["journal"] == "Nature Energy"
    assert second.metadata["date"] == "2019-04-01"
    params = api.params()
    assert params["search"] == "cold climate heat pumps" and params["per-page"] == "5"
    assert params["api_key"] == "k-123" and params["mailto"] == "me@example.org"


def test_a_gzip_answer_is_read_once(api, clock):
    body = gzip.compress((ENGINES / "searxng_search.json").read_bytes())
    api.answer("/search", (200, "application/json", body, {"Content-Encoding": "gzip"}))
    outcome = make_search(api, clock, ("searxng",))[0].search("q")
    assert len(outcome.results) == 2, outcome.degraded


def test_an_answer_over_the_size_cap_is_refused(api, clock, monkeypatch):
    from sala_report.retrieval.engines import http

    monkeypatch.setattr(http, "MAX_ANSWER_BYTES", 1000)
    api.answer("/search", ok("searxng_search.json", "application/json"))
    outcome = make_search(api, clock, ("searxng",))[0].search("q")
    assert "more than 1,000 bytes" in outcome.degraded


def test_openalex_allowance_used_up_degrades_with_the_api_key_hint(api, clock):
    api.answer("/works", (429, "application/json", b'{"error": "Rate limit exceeded"}', {}))
    outcome = make_search(api, clock, ("openalex",), max_retries=1)[0].search("q")
    assert "rate limited" in outcome.degraded and "search.openalex_api_key" in outcome.degraded
    assert "gave up after 2 tries" in outcome.degraded and len(api.requests) == 2


def test_searxng_json_is_normalised_with_language_and_time_range(api, clock):
    api.answer("/search", ok("searxng_search.json", "application/json"))
    search, _ = make_search(api, clock, ("searxng",), region="de-de", timelimit="m", safesearch="strict")
    outcome = search.search("heat pump defrost")
    assert [r.url for r in outcome.results] == [
        "https://www.energy.gov/heat-pump-defrost",
        "https://en.wikipedia.org/wiki/Heat_pump",
    ]
    assert outcome.results[1].metadata == {"date": "2026-10-01"}
    params = api.params()
    assert params == {
        "q": "heat pump defrost",
        "format": "json",
        "pageno": "1",
        "safesearch": "2",
        "time_range": "month",
        "language": "de-DE",
    }


def test_searxng_without_json_output_says_how_to_enable_it_and_falls_back(api, clock):
    api.answer("/search", (403, "text/html", b"<h1>403 Forbidden</h1>", {}))
    api.script["/api/query"] = [ok("arxiv_feed.xml", ATOM)]
    outcome = make_search(api, clock, ("searxng", "arxiv"))[0].search("q")
    assert outcome.engine == "arxiv" and len(outcome.results) == 2
    assert "search.formats" in outcome.errors[0] and "settings.yml" in outcome.errors[0]
    assert [path for path, _ in api.requests] == ["/search", "/api/query"]  # a 403 is not retried


def test_searxng_unset_is_a_clear_degraded_state(clock):
    outcome = WebSearch(SearchConfig(engines=("searxng",)), sleep=clock.sleep).search("q")
    assert "search.searxng_url" in outcome.degraded


def test_an_engine_that_never_answers_times_out_and_is_retried(api, clock):
    api.answer("/works", (200, "application/json", lambda: time.sleep(1.0) or b"{}", {}))
    outcome = make_search(api, clock, ("openalex",), max_retries=1, timeout_s=0.2)[0].search("q")
    assert "timed out" in outcome.degraded and len(api.requests) == 2


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[1, 2]"])
def test_garbage_answers_degrade_without_a_traceback(api, clock, body):
    api.answer("/works", (200, "application/json", body, {}))
    api.answer("/api/query", (200, ATOM, body, {}))
    for engine in ("openalex", "arxiv"):
        outcome = make_search(api, clock, (engine,))[0].search("q")
        assert outcome.results == [] and outcome.degraded.startswith("web search failed")


def test_a_local_searxng_is_used_but_its_results_on_private_addresses_are_not_read(api, server, clock):
    """The instance on loopback is the person's choice; a result pointing into their network is not."""
    page = server.base + "/article"
    hits_before = len(server.hits)  # the page server is shared by the module's tests
    body = json.dumps({"query": "q", "results": [{"url": page, "title": "Local page", "content": "x"}]}).encode()
    api.answer("/search", (200, "application/json", body, {}))
    events = []
    store = Store.open(":memory:")
    fetcher = Fetcher(FetchConfig(connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=3.0))  # the default guard
    Retriever(store, search=make_search(api, clock, ("searxng",))[0], fetcher=fetcher).gather(
        ["q"], 3, on_event=events.append
    )
    assert any(isinstance(e, SearchDone) and e.engine == "searxng" for e in events)
    failed = [e for e in events if isinstance(e, SourceFailed)]
    assert [e.location for e in failed] == [page] and "loopback" in failed[0].reason
    assert store.source_by_location(page).failure == "refused"
    assert "/article" not in server.hits[hits_before:]


class PaperSearch:
    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        return SearchOutcome(
            query, [SearchResult("Paper", self.url, "", {"doi": "10.1/x", "type": "paper"})], engine="openalex"
        )


def test_what_the_engine_knew_of_a_paper_is_stored_with_its_page(server):
    store = Store.open(":memory:")
    search = PaperSearch()
    search.url = server.base + "/article"
    fetcher = Fetcher(FetchConfig(allow_private_addresses=True, total_timeout_s=3.0))
    result = Retriever(store, search=search, fetcher=fetcher).gather(["q"], 3)
    (source,) = store.sources(result.new_source_ids, with_text=False)
    assert source.metadata["work"] == {"doi": "10.1/x", "type": "paper"}


def test_an_unknown_engine_name_is_refused_not_sent_elsewhere():
    """ddgs sends a backend name it does not know to another engine; we refuse the name instead."""
    with pytest.raises(ValueError, match="search engine must be one of arxiv, openalex, searxng, .*got 'arxv'"):
        WebSearch(SearchConfig(engines=("duckduckgo", "arxv")))
