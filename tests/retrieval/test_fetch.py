"""Fetching real fixture pages from loopback servers: every page ends in text or a recorded failure, in time."""

from __future__ import annotations

import threading
import time

import pytest

from sala_report.retrieval import FetchConfig, Fetcher, Store, store_fetched

FAST = dict(allow_private_addresses=True, connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=3.0)

# path -> (expected status in the store, expected failure kind, text that must appear, text that must not)
CASES = {
    "/article": ("ok", None, "railway embankments", "casino"),
    "/report.pdf": ("ok", None, "La Rance", None),
    "/octet.pdf": ("ok", None, "tidal stream", None),
    "/cp1252": ("ok", None, "vignerons français", None),
    "/koi8.txt": ("ok", None, "Мурманск", None),
    "/notes.md": ("ok", None, "Owls nest", None),
    "/malformed": ("ok", None, "Rhone glacier", None),
    "/moved": ("ok", None, "railway embankments", None),
    "/empty": ("empty", "extract", None, None),
    "/blank": ("empty", "extract", None, None),
    "/huge": ("failed", "too_large", None, None),
    "/huge-declared": ("failed", "too_large", None, None),
    "/drip": ("failed", "timeout", None, None),
    "/loop": ("failed", "redirects", None, None),
    "/chain/11": ("failed", "redirects", None, None),
    "/image": ("failed", "content_type", None, None),
    "/no-type": ("failed", "content_type", None, None),
    "/gone": ("failed", "http", None, None),
}


@pytest.fixture(scope="module")
def fetched(server, silent_port, tmp_path_factory):
    """Fetch every case at once (as a search result list would be), store each, and time the whole."""
    store = Store.open(tmp_path_factory.mktemp("fetch") / "sala.db")
    urls = [server.base + path for path in CASES] + [f"http://127.0.0.1:{silent_port}/never"]
    fetcher = Fetcher(FetchConfig(**FAST, per_host=16, concurrency=32))
    start = time.monotonic()
    results = fetcher.fetch_all(urls)
    elapsed = time.monotonic() - start
    sources = {r.url: store_fetched(store, r) for r in results}
    yield {"results": {r.url: r for r in results}, "sources": sources, "elapsed": elapsed, "store": store}
    store.close()


@pytest.mark.parametrize("path", list(CASES))
def test_fixture_page_ends_in_text_or_recorded_failure(fetched, server, path):
    status, failure, must, must_not = CASES[path]
    url = server.base + path
    source = fetched["sources"][url]
    assert source.status == status, source.error
    assert source.failure == failure
    if status == "ok":
        assert must in source.text
        assert source.chunk_count >= 1
        if must_not:
            assert must_not not in source.text
    else:
        assert source.error  # a message a person can read
        assert source.chunk_count == 0


def test_all_cases_finish_within_the_total_timeout_and_leave_the_store_intact(fetched):
    # The slowest cases (the drip and the silent server) are bounded by total/read timeouts of 3 s / 1 s.
    assert fetched["elapsed"] < FAST["total_timeout_s"] + 3
    assert fetched["store"].check_integrity() == []


def test_server_that_never_answers_times_out(fetched, silent_port):
    result = fetched["results"][f"http://127.0.0.1:{silent_port}/never"]
    assert result.failure == "timeout"
    assert result.seconds < FAST["total_timeout_s"] + 1


def test_article_metadata_is_extracted(fetched, server):
    source = fetched["sources"][server.base + "/article"]
    assert source.title == "Urban Foxes Rewrite Their Night Routes"
    assert source.metadata["author"] == "Mira Okafor"
    assert source.metadata["date"] == "2024-03-18"
    assert source.metadata["sitename"] == "The Field Desk"
    assert source.metadata["canonical_url"] == "https://fielddesk.example/ecology/urban-foxes-night-routes"
    assert "Subscribe today" not in source.text  # navigation dropped
    assert "| 2021 | 7.4 |" in source.text  # tables kept, as Markdown


def test_pdf_title_and_pages(fetched, server):
    source = fetched["sources"][server.base + "/report.pdf"]
    assert source.title == "Fixture Report on Tidal Energy"
    assert source.metadata["pages"] == 2
    assert source.metadata["content_type"] == "application/pdf"


def test_redirect_records_final_url(fetched, server):
    assert fetched["results"][server.base + "/moved"].final_url == server.base + "/article"
    assert "redirect loop" in fetched["sources"][server.base + "/loop"].error


def test_oversized_body_stops_reading_at_the_cap(fetched, server):
    result = fetched["results"][server.base + "/huge"]
    assert result.failure == "too_large" and result.body == b""
    assert "limit" in result.error


@pytest.mark.parametrize("url", ["http://[::1", "https://", "http:///path-only"])
def test_invalid_urls_are_reported_not_raised(url):
    (result,) = Fetcher(FetchConfig(**FAST)).fetch_all([url])
    assert result.failure == "invalid_url" and result.error


def test_per_host_limit_holds(server):
    server.max_in_flight = 0
    fetcher = Fetcher(FetchConfig(**FAST, per_host=2, concurrency=8))
    results = fetcher.fetch_all([f"{server.base}/hold/{i}" for i in range(1, 7)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 2


def test_cancel_ends_fetches_promptly(server):
    cancel = threading.Event()
    fetcher = Fetcher(FetchConfig(allow_private_addresses=True, total_timeout_s=30.0, read_timeout_s=30.0))
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    results = fetcher.fetch_all([server.base + "/drip", server.base + "/drip?2"], cancel=cancel)
    assert time.monotonic() - start < 2.0
    assert [r.failure for r in results] == ["cancelled", "cancelled"]


def test_honest_user_agent_and_host_header_are_sent(server):
    result = Fetcher(FetchConfig(**FAST)).fetch_all([server.base + "/notes.md"])[0]
    assert result.ok
    headers = server.headers_seen["/notes.md"]
    assert headers["User-Agent"].startswith("sala-report/")
    assert headers["Host"] == server.base.removeprefix("http://")


def test_fetch_many_can_run_inside_a_running_loop(server):
    import asyncio

    async def caller():
        return Fetcher(FetchConfig(**FAST)).fetch_all([server.base + "/notes.md"])

    (result,) = asyncio.run(caller())
    assert result.ok and b"Owls" in result.body
