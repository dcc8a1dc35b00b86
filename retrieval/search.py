"""Web search behind a small protocol: ddgs with pinned engines, a cache, a rate limiter, backoff and
fallback; and local search over the store, which answers offline.

Queries go only to the engines the person listed, in order: ddgs's `backend="auto"` would spread
them over every engine it knows, so each call names exactly one engine.

How ddgs 9.16 reports trouble (read from its source): an engine's HTTP error or non-200 answer is
swallowed per engine, and the call then raises `TimeoutException` when the last error was a timeout,
else `DDGSException("No results found.")` -- which is also what a rate-limited engine (HTTP 202)
looks like. `RatelimitException` exists but the library no longer raises it; we still treat it as a
rate limit in case a later version does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from sala_report.retrieval.types import SearchOutcome, SearchResult


class SearchBackend(Protocol):
    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome: ...


class TextSearchClient(Protocol):
    """The part of `ddgs.DDGS` we use; tests pass a fake with the same signature."""

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class SearchConfig:
    engines: tuple[str, ...] = ("duckduckgo",)  # the first is the default; the rest are fallbacks, in order
    region: str = "wt-wt"
    safesearch: str = "moderate"
    timelimit: str = ""  # d, w, m, y or empty
    max_results: int = 8
    min_interval_s: float = 1.0  # between any two calls to any engine, process-wide
    max_retries: int = 3  # per engine, on rate limits and timeouts
    timeout_s: float = 10.0
    backoff_s: float = 2.0  # first retry delay; doubles each time
    max_backoff_s: float = 30.0
    cache_ttl_s: float = 7 * 24 * 3600.0


class RateLimiter:
    """At most one call per `min_interval_s`, across threads. `clock` and `sleep` are injectable for tests."""

    def __init__(self, min_interval_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last: float | None = None

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None:
                delay = self._last + self.min_interval_s - now
                if delay > 0:
                    self._sleep(delay)
                    now = self._clock()
            self._last = now


_shared_limiter: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_rate_limiter(min_interval_s: float) -> RateLimiter:
    """The process-wide limiter every WebSearch uses by default (the strictest interval asked for wins)."""
    global _shared_limiter
    with _shared_lock:
        if _shared_limiter is None:
            _shared_limiter = RateLimiter(min_interval_s)
        _shared_limiter.min_interval_s = max(_shared_limiter.min_interval_s, min_interval_s)
        return _shared_limiter


def _ddgs_client(timeout_s: float) -> TextSearchClient:
    from ddgs import DDGS

    return DDGS(timeout=max(1, round(timeout_s)))


class WebSearch:
    """Web search through ddgs. Never raises for network trouble: a failed search comes back as a
    `SearchOutcome` with no results and `degraded` saying why."""

    def __init__(
        self,
        config: SearchConfig | None = None,
        *,
        store=None,  # a Store, for the result cache; None: no cache
        client_factory: Callable[[float], TextSearchClient] = _ddgs_client,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config or SearchConfig()
        if not self.config.engines:
            raise ValueError("SearchConfig.engines must name at least one ddgs engine, got none")
        self._store = store
        self._client_factory = client_factory
        self._client: TextSearchClient | None = None
        self._limiter = limiter or shared_rate_limiter(self.config.min_interval_s)
        self._sleep = sleep

    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        query = " ".join(query.split())
        if not query:
            raise ValueError("search query must not be empty")
        cfg = self.config
        wanted = max_results or cfg.max_results
        errors: list[str] = []
        empty_engines: list[str] = []
        for engine in cfg.engines:
            if self._store is not None:
                cached = self._store.cached_search(query, engine, cfg.region, cfg.timelimit, max_age_s=cfg.cache_ttl_s)
                if cached:
                    return SearchOutcome(query, cached[:wanted], engine=engine, cached=True, errors=tuple(errors))
            results, error = self._ask(engine, query, wanted)
            if results:
                if self._store is not None:
                    self._store.save_search(query, engine, cfg.region, cfg.timelimit, results)
                return SearchOutcome(query, results, engine=engine, errors=tuple(errors))
            if error is None:
                empty_engines.append(engine)
            else:
                errors.append(f"{engine}: {error}")
        if errors:
            reason = "web search failed (" + "; ".join(errors) + ")"
        else:
            # ddgs reports a rate-limited engine exactly like one that found nothing, so say both.
            reason = (f"no results from {', '.join(empty_engines)} (nothing matched, or the engine is "
                      "rate limiting; try again later or add a fallback engine in search.engines)")
        return SearchOutcome(query, [], degraded=reason, errors=tuple(errors))

    def _ask(self, engine: str, query: str, wanted: int) -> tuple[list[SearchResult], str | None]:
        """Results from one engine, retrying rate limits and timeouts with exponential backoff.
        Returns ([], None) when the engine found nothing, ([], message) when it failed."""
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        cfg = self.config
        message = None
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self._sleep(min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)))
            self._limiter.wait()
            try:
                raw = self._client_for().text(
                    query, region=cfg.region, safesearch=cfg.safesearch, timelimit=cfg.timelimit or None,
                    max_results=wanted, backend=engine,
                )
            except RatelimitException as e:
                message = f"rate limited ({e})"
                continue
            except TimeoutException as e:
                message = f"timed out ({e})"
                continue
            except DDGSException as e:
                if "no results" in str(e).lower():
                    return [], None
                return [], str(e)
            except Exception as e:  # ddgs's HTTP layer (primp) can leak its own errors
                return [], f"{type(e).__name__}: {e}"
            return normalise(raw)[:wanted], None
        return [], f"{message}; gave up after {cfg.max_retries + 1} tries"

    def _client_for(self) -> TextSearchClient:
        if self._client is None:
            self._client = self._client_factory(self.config.timeout_s)
        return self._client


def normalise(raw: list[dict[str, Any]] | None) -> list[SearchResult]:
    """ddgs text results ({title, href, body}) as SearchResults: http(s) URLs only, no duplicates."""
    results, seen = [], set()
    for item in raw or []:
        url = str(item.get("href") or item.get("url") or "").strip()
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        results.append(SearchResult(
            title=" ".join(str(item.get("title") or "").split()) or url,
            url=url,
            snippet=" ".join(str(item.get("body") or item.get("snippet") or "").split()),
        ))
    return results


class LocalSearch:
    """Search over the stored sources only: works offline, returns each source once, best passage as snippet."""

    def __init__(self, store):
        self._store = store

    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        wanted = max_results or 8
        passages = self._store.passages(query, k=wanted * 3)
        results, seen = [], set()
        for passage in passages:
            if passage.source_id in seen:
                continue
            seen.add(passage.source_id)
            snippet = " ".join(passage.text.split())[:300]
            results.append(SearchResult(passage.title or passage.location, passage.location, snippet))
        return SearchOutcome(query, results[:wanted], engine="local")
