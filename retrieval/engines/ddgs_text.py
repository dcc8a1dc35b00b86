"""ddgs's engines (duckduckgo, brave, mojeek, ...), one pinned engine per call.

How ddgs 9.16 reports trouble (read from its source): an engine's HTTP error or non-200 answer is
swallowed per engine, and the call then raises `TimeoutException` when the last error was a timeout,
else `DDGSException("No results found.")` -- which is also what a rate-limited engine (HTTP 202)
looks like. `RatelimitException` exists but the library no longer raises it; we still treat it as a
rate limit in case a later version does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sala_report.retrieval.engines.base import EngineConfig, EngineError, EngineTimeout, RateLimited
from sala_report.retrieval.engines.http import clean
from sala_report.retrieval.types import SearchResult


class TextSearchClient(Protocol):
    """The part of `ddgs.DDGS` we use; tests pass a fake with the same signature."""

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]: ...


def ddgs_client(timeout_s: float) -> TextSearchClient:
    from ddgs import DDGS

    return DDGS(timeout=max(1, round(timeout_s)))


class DdgsEngine:
    min_interval_s = 0.0

    def __init__(
        self, name: str, config: EngineConfig, client_factory: Callable[[float], TextSearchClient] | None = None
    ):
        self.name = name
        self.config = config
        self._client_factory = client_factory or ddgs_client
        self._client: TextSearchClient | None = None

    def search(self, query: str, *, max_results: int) -> list[SearchResult]:
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        cfg = self.config
        try:
            if self._client is None:
                self._client = self._client_factory(cfg.timeout_s)
            # backend names exactly one engine: ddgs's "auto" would spread the query over every engine it knows
            raw = self._client.text(
                query,
                region=cfg.region,
                safesearch=cfg.safesearch,
                timelimit=cfg.timelimit or None,
                max_results=max_results,
                backend=self.name,
            )
        except RatelimitException as e:
            raise RateLimited(str(e)) from e
        except TimeoutException as e:
            raise EngineTimeout(str(e)) from e
        except DDGSException as e:
            if "no results" in str(e).lower():
                return []
            raise EngineError(str(e)) from e
        except Exception as e:  # ddgs's HTTP layer (primp) can leak its own errors
            raise EngineError(f"{type(e).__name__}: {e}") from e
        return normalise(raw)[:max_results]


def normalise(raw: list[dict[str, Any]] | None) -> list[SearchResult]:
    """ddgs text results ({title, href, body}) as SearchResults: http(s) URLs only, no duplicates."""
    results, seen = [], set()
    for item in raw or []:
        url = str(item.get("href") or item.get("url") or "").strip()
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        results.append(
            SearchResult(
                title=clean(item.get("title")) or url, url=url, snippet=clean(item.get("body") or item.get("snippet"))
            )
        )
    return results
