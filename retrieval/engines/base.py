"""What every search engine provides, the errors through which it reports trouble, and the factory.

Engines only ask and parse: retries, backoff, rate limiting, caching and the degraded state live once,
in `retrieval/search.py`, for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sala_report.retrieval.types import SearchResult

# Our own API clients; every other name is one of ddgs's engines (duckduckgo, brave, mojeek, ...).
API_ENGINES = ("arxiv", "openalex", "searxng")


class EngineError(Exception):
    """The engine answered, or failed, in a way another try will not fix; the message is for a person."""


class RateLimited(EngineError):
    """The engine asked us to slow down; worth retrying after `retry_after_s` (when it said) or a backoff."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineTimeout(EngineError):
    """No answer in time; worth retrying."""


class Engine(Protocol):
    name: str
    min_interval_s: float  # the engine's own floor between two calls (arXiv asks for 3 s)

    def search(self, query: str, *, max_results: int) -> list[SearchResult]:
        """Results for `query`; [] when nothing matched. Raises the errors above for trouble."""
        ...


@dataclass(frozen=True)
class EngineConfig:
    """What the engines need from the search settings. API addresses are the person's configuration
    (a SearXNG instance, a mirror), never taken from search results."""

    region: str = "wt-wt"
    safesearch: str = "moderate"
    timelimit: str = ""
    timeout_s: float = 10.0
    user_agent: str = "sala-report"
    searxng_url: str = ""
    arxiv_url: str = "https://export.arxiv.org/api/query"
    openalex_url: str = "https://api.openalex.org/works"
    openalex_api_key: str = ""
    openalex_mailto: str = ""


def ddgs_engines() -> tuple[str, ...] | None:
    """The text engines this ddgs knows, None when it does not say (then any name is passed through)."""
    try:
        from ddgs.engines import ENGINES
    except ImportError:
        return None
    return tuple(sorted(ENGINES.get("text", {})))


def known_engines() -> tuple[str, ...] | None:
    text = ddgs_engines()
    return None if text is None else (*API_ENGINES, *text)


def make_engine(name: str, config: EngineConfig, *, ddgs_client=None) -> Engine:
    """The engine called `name`. `ddgs_client` (a callable taking the timeout) is for tests of ddgs engines.

    Raises ValueError for a name no engine has: ddgs quietly sends an unknown backend name to another
    engine (Yahoo, in ddgs 9.16), which would break the promise that queries go only where the person said."""
    known = known_engines()
    if known is not None and name not in known:
        raise ValueError(f"search engine must be one of {', '.join(known)}, got {name!r}")
    if name == "arxiv":
        from sala_report.retrieval.engines.arxiv import ArxivEngine

        return ArxivEngine(config)
    if name == "openalex":
        from sala_report.retrieval.engines.openalex import OpenAlexEngine

        return OpenAlexEngine(config)
    if name == "searxng":
        from sala_report.retrieval.engines.searxng import SearxngEngine

        return SearxngEngine(config)
    from sala_report.retrieval.engines.ddgs_text import DdgsEngine

    return DdgsEngine(name, config, client_factory=ddgs_client)
