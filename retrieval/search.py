"""Web search behind a small protocol: the engines the person listed (ddgs's, arXiv, OpenAlex, a SearXNG
instance), tried in order, with a cache, per-engine rate limits, backoff and fallback; and local search
over the store, which answers offline.

Engines only ask and parse (retrieval/engines/); everything about trouble -- retries, backoff, the
degraded state -- is here, once, so every engine behaves alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sala_report.retrieval.engines import Engine, EngineConfig, EngineError, EngineTimeout, RateLimited, make_engine
from sala_report.retrieval.engines.ddgs_text import TextSearchClient, normalise
from sala_report.retrieval.types import SearchOutcome, SearchResult

__all__ = ["LocalSearch", "RateLimiter", "SearchBackend", "SearchConfig", "TextSearchClient", "WebSearch", "normalise"]


class SearchBackend(Protocol):
    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome: ...


@dataclass(frozen=True)
class SearchConfig:
    engines: tuple[str, ...] = ("duckduckgo",)  # the first is the default; the rest are fallbacks, in order
    region: str = "wt-wt"
    safesearch: str = "moderate"
    timelimit: str = ""  # d, w, m, y or empty
    max_results: int = 8
    min_interval_s: float = 1.0  # between two calls to one engine, process-wide (an engine may ask for more)
    max_retries: int = 3  # per engine, on rate limits and timeouts
    timeout_s: float = 10.0
    backoff_s: float = 2.0  # first retry delay; doubles each time
    max_backoff_s: float = 30.0
    cache_ttl_s: float = 7 * 24 * 3600.0
    searxng_url: str = ""  # the person's SearXNG instance (may be on their own machine)
    openalex_api_key: str = ""
    openalex_mailto: str = ""
    arxiv_url: str = "https://export.arxiv.org/api/query"
    openalex_url: str = "https://api.openalex.org/works"

    def engine_config(self) -> EngineConfig:
        from sala_report.retrieval.fetch import DEFAULT_USER_AGENT

        return EngineConfig(
            region=self.region,
            safesearch=self.safesearch,
            timelimit=self.timelimit,
            timeout_s=self.timeout_s,
            user_agent=DEFAULT_USER_AGENT,
            searxng_url=self.searxng_url,
            arxiv_url=self.arxiv_url,
            openalex_url=self.openalex_url,
            openalex_api_key=self.openalex_api_key,
            openalex_mailto=self.openalex_mailto,
        )


class RateLimiter:
    """At most one call per `min_interval_s`, across threads. `clock` and `sleep` are injectable for tests."""

    def __init__(
        self,
        min_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
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


_shared_limiters: dict[str, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(engine: str, min_interval_s: float) -> RateLimiter:
    """The process-wide limiter of one engine, shared by every WebSearch (the strictest interval asked for wins)."""
    with _shared_lock:
        limiter = _shared_limiters.setdefault(engine, RateLimiter(min_interval_s))
        limiter.min_interval_s = max(limiter.min_interval_s, min_interval_s)
        return limiter


def _ddgs_client(timeout_s: float) -> TextSearchClient:
    from ddgs import DDGS

    return DDGS(timeout=max(1, round(timeout_s)))


class WebSearch:
    """Web search through the configured engines, in order. Never raises for network trouble: a failed
    search comes back as a `SearchOutcome` with no results and `degraded` saying why."""

    def __init__(
        self,
        config: SearchConfig | None = None,
        *,
        store=None,  # a Store, for the result cache; None: no cache
        client_factory: Callable[[float], TextSearchClient] | None = None,  # ddgs engines' client, for tests
        engines: dict[str, Engine] | None = None,  # engines by name, replacing the built ones (tests)
        limiter: RateLimiter | None = None,  # one limiter for every engine (tests)
        limiter_for: Callable[[str, float], RateLimiter] | None = None,  # engine, interval -> its limiter
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config or SearchConfig()
        if not self.config.engines:
            raise ValueError("SearchConfig.engines must name at least one engine, got none")
        self._store = store
        given = engines or {}
        engine_config = self.config.engine_config()
        self._engines = {
            name: given.get(name) or make_engine(name, engine_config, ddgs_client=client_factory)
            for name in self.config.engines
        }
        limiter_for = limiter_for or shared_rate_limiter
        self._limiters = {
            name: limiter or limiter_for(name, max(self.config.min_interval_s, engine.min_interval_s))
            for name, engine in self._engines.items()
        }
        self._sleep = sleep

    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        query = " ".join(query.split())
        if not query:
            raise ValueError("search query must not be empty")
        cfg = self.config
        wanted = max_results or cfg.max_results
        errors: list[str] = []
        empty_engines: list[str] = []
        for name in cfg.engines:
            if self._store is not None:
                cached = self._store.cached_search(query, name, cfg.region, cfg.timelimit, max_age_s=cfg.cache_ttl_s)
                if cached:
                    return SearchOutcome(query, cached[:wanted], engine=name, cached=True, errors=tuple(errors))
            results, error = self._ask(self._engines[name], query, wanted)
            if results:
                if self._store is not None:
                    self._store.save_search(query, name, cfg.region, cfg.timelimit, results)
                return SearchOutcome(query, results, engine=name, errors=tuple(errors))
            if error is None:
                empty_engines.append(name)
            else:
                errors.append(f"{name}: {error}")
        if errors:
            reason = "web search failed (" + "; ".join(errors) + ")"
        else:
            # ddgs reports a rate-limited engine exactly like one that found nothing, so say both.
            reason = (
                f"no results from {', '.join(empty_engines)} (nothing matched, or the engine is "
                "rate limiting; try again later or add a fallback engine in search.engines)"
            )
        return SearchOutcome(query, [], degraded=reason, errors=tuple(errors))

    def _ask(self, engine: Engine, query: str, wanted: int) -> tuple[list[SearchResult], str | None]:
        """Results from one engine, retrying rate limits and timeouts with exponential backoff (longer when
        the engine said how long to wait). Returns ([], None) when it found nothing, ([], message) when it failed."""
        cfg = self.config
        limiter = self._limiters[engine.name]
        message, wait_at_least = None, 0.0
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                backoff = cfg.backoff_s * 2 ** (attempt - 1)
                self._sleep(min(cfg.max_backoff_s, max(backoff, wait_at_least)))
            limiter.wait()
            try:
                return engine.search(query, max_results=wanted)[:wanted], None
            except RateLimited as e:
                message, wait_at_least = f"rate limited ({e})", e.retry_after_s or 0.0
            except EngineTimeout as e:
                message, wait_at_least = f"timed out ({e})", 0.0
            except EngineError as e:
                return [], str(e)
            except Exception as e:  # an engine that breaks its promise still must not end the run
                return [], f"{type(e).__name__}: {e}"
        return [], f"{message}; gave up after {cfg.max_retries + 1} tries"


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
