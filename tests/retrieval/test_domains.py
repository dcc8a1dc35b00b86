"""Include/exclude domains: the rule on real host names, and Retriever.gather fetching only what passes
(real domain names staged onto the loopback 'public' server through the fetcher's resolver)."""

from __future__ import annotations

import pytest

from sala_report.retrieval import FetchConfig, Fetcher, Retriever, SearchOutcome, SearchResult, Store
from sala_report.retrieval.domains import DomainFilter, normalise_domain
from sala_report.retrieval.netguard import is_public_address


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://www.nature.com/articles/s41560-024-01234-5", True),  # a subdomain of an included domain
        ("https://nature.com/", True),
        ("https://NATURE.COM./articles", True),  # case and the root dot do not matter
        ("https://blogs.nature.com/news/2024/heat", False),  # excluded wins over included
        ("https://news.blogs.nature.com/x", False),
        ("https://evilnature.com/nature.com", False),  # a look-alike is not a subdomain
        ("https://nature.com.evil.example/", False),
        ("https://arxiv.org/abs/2403.01234", True),
        ("https://export.arxiv.org/abs/2403.01234", True),
        ("https://www.bücher.de/heat-pumps", True),  # an IDN matches its punycode entry
        ("https://en.wikipedia.org/wiki/Heat_pump", False),  # not on the include list
        ("not a url", False),
    ],
)
def test_include_and_exclude_on_real_urls(url, allowed):
    rule = DomainFilter.of(["Nature.com", "https://arxiv.org/list/", "xn--bcher-kva.de"], ["*.blogs.nature.com"])
    assert rule.allows(url) is allowed


def test_exclude_only_keeps_everything_else():
    rule = DomainFilter.of(exclude=["pinterest.com"])
    assert rule.allows("https://www.energy.gov/heat-pumps") and not rule.allows("https://www.pinterest.com/pin/1")
    assert not DomainFilter.of().active and rule.active


@pytest.mark.parametrize("entry", ["", "   ", "a..b", "user@example.org", "https://", "."])
def test_an_entry_that_is_no_domain_is_a_value_error_naming_it(entry):
    with pytest.raises(ValueError, match="expected a domain such as example.org, got"):
        normalise_domain(entry)


def test_gather_fetches_only_results_on_allowed_domains(public_server):
    port = public_server.server_address[1]
    hosts = ["www.nature.com", "blogs.nature.com", "evilnature.com"]
    urls = [f"http://{host}:{port}/article" for host in hosts]

    class Search:
        def search(self, query, *, max_results=None):
            return SearchOutcome(query, [SearchResult(u, u, "") for u in urls], engine="duckduckgo")

    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.2"]

    fetcher = Fetcher(
        FetchConfig(total_timeout_s=3.0),
        resolver=resolver,
        is_public=lambda ip: str(ip) == "127.0.0.2" or is_public_address(ip),
    )
    store = Store.open(":memory:")
    rule = DomainFilter.of(["nature.com"], ["blogs.nature.com"])
    result = Retriever(store, search=Search(), fetcher=fetcher, domains=rule).gather(["heat pumps"], 3)
    assert asked == ["www.nature.com"]  # the others were never even looked up
    assert [s.location for s in store.sources(with_text=False)] == [urls[0]]
    assert result.degraded is None


def test_a_filter_that_leaves_nothing_says_so():
    class Search:
        def search(self, query, *, max_results=None):
            return SearchOutcome(query, [SearchResult("x", "https://www.pinterest.com/pin/1", "")], engine="duckduckgo")

    result = Retriever(Store.open(":memory:"), search=Search(), domains=DomainFilter.of(["nature.com"])).gather(
        ["q"], 3
    )
    assert "domain filter" in result.degraded and "none of the 1 web results" in result.degraded
