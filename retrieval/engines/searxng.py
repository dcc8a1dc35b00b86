"""A SearXNG instance the person runs or chose (`search.searxng_url`), through its JSON output format.

SearXNG answers 403 when the instance does not enable `json` in `search.formats` of its settings.yml
(many public instances do not), and 429 when its limiter thinks we ask too often.
"""

from __future__ import annotations

import json

from sala_report.retrieval.engines import http
from sala_report.retrieval.engines.base import EngineConfig, EngineError
from sala_report.retrieval.types import SearchResult

SAFESEARCH = {"off": 0, "moderate": 1, "strict": 2}
TIME_RANGES = {"d": "day", "w": "week", "m": "month", "y": "year"}


class SearxngEngine:
    name = "searxng"
    min_interval_s = 0.0

    def __init__(self, config: EngineConfig):
        self.config = config

    def search(self, query: str, *, max_results: int) -> list[SearchResult]:
        cfg = self.config
        if not cfg.searxng_url:
            raise EngineError("no SearXNG instance set: put its address in search.searxng_url")
        params: dict[str, str | int] = {
            "q": query,
            "format": "json",
            "pageno": 1,
            "safesearch": SAFESEARCH.get(cfg.safesearch, 1),
        }
        if cfg.timelimit in TIME_RANGES:
            params["time_range"] = TIME_RANGES[cfg.timelimit]
        language = _language(cfg.region)
        if language:
            params["language"] = language
        endpoint = cfg.searxng_url.rstrip("/") + "/search"
        response = http.get(
            endpoint,
            params,
            engine=self.name,
            timeout_s=cfg.timeout_s,
            user_agent=cfg.user_agent,
            accept="application/json",
        )
        if response.status_code == 403:
            raise EngineError(
                f"{cfg.searxng_url} refuses JSON answers (HTTP 403): enable `json` under "
                "search.formats in the instance's settings.yml"
            )
        if response.status_code >= 400:
            raise EngineError(f"HTTP {response.status_code} from SearXNG at {cfg.searxng_url}")
        try:
            data = json.loads(response.content)
        except ValueError as e:
            raise EngineError(f"SearXNG at {cfg.searxng_url} answered with something that is not JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise EngineError(f"SearXNG at {cfg.searxng_url} answered without a `results` list")
        results, seen = [], set()
        for item in data["results"]:
            url = str(item.get("url") or "").strip() if isinstance(item, dict) else ""
            if not url.startswith(("http://", "https://")) or url in seen:
                continue
            seen.add(url)
            metadata = {}
            if item.get("publishedDate"):
                metadata["date"] = str(item["publishedDate"])[:10]
            if item.get("doi"):
                metadata["doi"] = str(item["doi"])
            results.append(
                SearchResult(
                    http.clean(item.get("title")) or url, url, http.clean(item.get("content")), metadata=metadata
                )
            )
        return results[:max_results]


def _language(region: str) -> str:
    """ddgs-style regions (`de-de`, `wt-wt`) as SearXNG languages (`de-DE`, none)."""
    parts = region.lower().split("-")
    if len(parts) != 2 or parts[0] in ("wt", "xa", "xl"):
        return ""
    country, lang = parts
    return f"{lang}-{country.upper()}"
