"""The ddgs wrapper against a fake with ddgs's `DDGS().text(...)` interface; only the clock is patched."""

from __future__ import annotations

import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from sala_report.retrieval import LocalSearch, RateLimiter, SearchConfig, Store, WebSearch
from sala_report.retrieval.store import SourceRecord


def hits(*names: str) -> list[dict]:
    return [{"title": f"About {n}", "href": f"https://{n}.example/page", "body": f"Snippet on {n}."} for n in names]


class FakeDDGS:
    """Answers per engine from a script: each entry is a result list or an exception to raise.
    The last entry repeats once the script runs out. Records every call."""

    def __init__(self, script: dict[str, list]):
        self.script = {engine: list(answers) for engine, answers in script.items()}
        self.calls: list[tuple[str, dict]] = []

    def text(self, query: str, **kwargs) -> list[dict]:
        self.calls.append((query, kwargs))
        answers = self.script[kwargs["backend"]]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_search(fake: FakeDDGS, clock, *, store=None, **config) -> WebSearch:
    cfg = SearchConfig(**{"min_interval_s": 1.0, "max_retries": 3, "backoff_s": 2.0, **config})
    return WebSearch(
        cfg,
        store=store,
        client_factory=lambda timeout: fake,
        limiter=RateLimiter(cfg.min_interval_s, clock=clock.time, sleep=clock.sleep),
        sleep=clock.sleep,
    )


def test_results_are_normalised_and_the_engine_is_pinned(clock):
    raw = hits("alpha", "beta") + [
        {"title": "dup", "href": "https://alpha.example/page", "body": "x"},
        {"title": "not web", "href": "javascript:alert(1)", "body": "x"},
        {"title": "  Spaced\n title ", "href": "https://gamma.example/", "body": " many   spaces "},
    ]
    fake = FakeDDGS({"duckduckgo": [raw]})
    outcome = make_search(fake, clock, region="de-de", timelimit="m", max_results=5).search("  fox   corridors ")
    assert [r.url for r in outcome.results] == [
        "https://alpha.example/page",
        "https://beta.example/page",
        "https://gamma.example/",
    ]
    assert outcome.results[2].title == "Spaced title" and outcome.results[2].snippet == "many spaces"
    assert outcome.engine == "duckduckgo" and outcome.degraded is None
    query, kwargs = fake.calls[0]
    assert query == "fox corridors"
    assert kwargs["backend"] == "duckduckgo"  # never "auto": queries go only where the person said
    assert kwargs["region"] == "de-de" and kwargs["timelimit"] == "m" and kwargs["max_results"] == 5


def test_rate_limit_backs_off_exponentially_then_succeeds(clock):
    fake = FakeDDGS({"duckduckgo": [RatelimitException("202 Ratelimit"), RatelimitException("202"), hits("a")]})
    outcome = make_search(fake, clock).search("q")
    assert [r.url for r in outcome.results] == ["https://a.example/page"]
    backoffs = [s for s in clock.sleeps if s not in (1.0,)]
    assert backoffs == [2.0, 4.0]
    assert len(fake.calls) == 3


def test_persistent_rate_limit_moves_to_the_fallback_engine(clock):
    fake = FakeDDGS({"duckduckgo": [RatelimitException("202 Ratelimit")], "brave": [hits("b")]})
    outcome = make_search(fake, clock, engines=("duckduckgo", "brave")).search("q")
    assert outcome.engine == "brave" and outcome.degraded is None
    assert [c[1]["backend"] for c in fake.calls] == ["duckduckgo"] * 4 + ["brave"]
    assert "duckduckgo: rate limited" in outcome.errors[0]


def test_rate_limit_without_fallback_is_a_clear_degraded_state(clock):
    fake = FakeDDGS({"duckduckgo": [RatelimitException("202 Ratelimit")]})
    outcome = make_search(fake, clock, max_retries=2).search("q")
    assert outcome.results == []
    assert "rate limited" in outcome.degraded and "gave up after 3 tries" in outcome.degraded
    assert len(fake.calls) == 3
    assert [s for s in clock.sleeps if s != 1.0] == [2.0, 4.0]


def test_timeouts_are_retried_then_degrade(clock):
    fake = FakeDDGS({"duckduckgo": [TimeoutException("timed out")]})
    outcome = make_search(fake, clock, max_retries=1).search("q")
    assert "timed out" in outcome.degraded
    assert len(fake.calls) == 2


def test_timeout_then_success(clock):
    fake = FakeDDGS({"duckduckgo": [TimeoutException("timed out"), hits("t")]})
    assert make_search(fake, clock).search("q").results[0].url == "https://t.example/page"


def test_backoff_is_capped(clock):
    fake = FakeDDGS({"duckduckgo": [RatelimitException("202")]})
    make_search(fake, clock, max_retries=6, max_backoff_s=10.0).search("q")
    assert [s for s in clock.sleeps if s != 1.0] == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


@pytest.mark.parametrize("answer", [DDGSException("No results found."), []])
def test_empty_results_say_so_instead_of_returning_nothing_silently(clock, answer):
    fake = FakeDDGS({"duckduckgo": [answer], "mojeek": [answer]})
    outcome = make_search(fake, clock, engines=("duckduckgo", "mojeek")).search("q")
    assert outcome.results == []
    assert outcome.degraded.startswith("no results from duckduckgo, mojeek")
    assert len(fake.calls) == 2  # empty is not retried on the same engine


def test_other_engine_errors_fall_through_without_retry(clock):
    fake = FakeDDGS({"duckduckgo": [DDGSException("ConnectError: dns failure")], "brave": [hits("b")]})
    outcome = make_search(fake, clock, engines=("duckduckgo", "brave")).search("q")
    assert outcome.engine == "brave"
    assert len(fake.calls) == 2


def test_unexpected_exception_becomes_degraded(clock):
    fake = FakeDDGS({"duckduckgo": [RuntimeError("primp exploded")]})
    outcome = make_search(fake, clock).search("q")
    assert "RuntimeError: primp exploded" in outcome.degraded


def test_global_rate_limiter_spaces_calls(clock):
    fake = FakeDDGS({"duckduckgo": [hits("a")]})
    search = make_search(fake, clock, min_interval_s=1.5)
    search.search("one")
    search.search("two")
    search.search("three")
    assert clock.sleeps == [1.5, 1.5]


def test_results_are_cached_per_query_engine_region_and_timelimit(clock):
    store = Store.open(":memory:")
    fake = FakeDDGS({"duckduckgo": [hits("a")]})
    first = make_search(fake, clock, store=store).search("q")
    again = make_search(fake, clock, store=store).search("q")
    assert not first.cached and again.cached
    assert again.results == first.results
    assert len(fake.calls) == 1
    make_search(fake, clock, store=store, region="fr-fr").search("q")
    make_search(fake, clock, store=store, timelimit="w").search("q")
    assert len(fake.calls) == 3
    assert store.db["searches"].count == 3


def test_empty_results_are_not_cached(clock):
    store = Store.open(":memory:")
    fake = FakeDDGS({"duckduckgo": [[], hits("a")]})
    assert make_search(fake, clock, store=store).search("q").degraded
    assert make_search(fake, clock, store=store).search("q").results


def test_empty_query_is_a_value_error(clock):
    with pytest.raises(ValueError):
        make_search(FakeDDGS({"duckduckgo": [[]]}), clock).search("   ")


def test_local_search_answers_from_the_store_offline():
    store = Store.open(":memory:")
    text = "Lighthouse keepers recorded storms in logbooks for two centuries."
    store.put_source(SourceRecord("/docs/light.md", "file", "Lighthouses", text, "h", [text]))
    outcome = LocalSearch(store).search("lighthouse storms")
    assert outcome.engine == "local"
    assert [(r.title, r.url) for r in outcome.results] == [("Lighthouses", "/docs/light.md")]
