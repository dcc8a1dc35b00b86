"""OpenAlex's scholarly works through its JSON API (`/works?search=`).

Since February 2026 OpenAlex wants a free API key (`search.openalex_api_key`); without one a person gets
a small daily allowance. It answers 429 (and sometimes 403) when an allowance is used up.
"""

from __future__ import annotations

import json

from sala_report.retrieval.engines import http
from sala_report.retrieval.engines.base import EngineConfig, EngineError, RateLimited
from sala_report.retrieval.types import SearchResult

FIELDS = (
    "id,doi,display_name,publication_year,publication_date,type,authorships,primary_location,"
    "best_oa_location,open_access,abstract_inverted_index"
)
NO_KEY_HINT = "OpenAlex allows little without an API key: set search.openalex_api_key (free at openalex.org)"


class OpenAlexEngine:
    name = "openalex"
    min_interval_s = 0.2  # OpenAlex allows bursts of 100 a second; there is no reason to go near that

    def __init__(self, config: EngineConfig):
        self.config = config

    def search(self, query: str, *, max_results: int) -> list[SearchResult]:
        cfg = self.config
        params: dict[str, str | int] = {"search": query, "per-page": max(1, min(max_results, 200)), "select": FIELDS}
        if cfg.openalex_api_key:
            params["api_key"] = cfg.openalex_api_key
        if cfg.openalex_mailto:
            params["mailto"] = cfg.openalex_mailto
        try:
            response = http.get(
                cfg.openalex_url,
                params,
                engine=self.name,
                timeout_s=cfg.timeout_s,
                user_agent=cfg.user_agent,
                accept="application/json",
            )
        except RateLimited as e:
            if not cfg.openalex_api_key:
                raise RateLimited(f"{e}; {NO_KEY_HINT}", e.retry_after_s) from e
            raise
        if response.status_code == 403:
            raise RateLimited(
                "HTTP 403 from OpenAlex (an allowance is used up, or the API key is wrong)"
                + ("" if cfg.openalex_api_key else f"; {NO_KEY_HINT}")
            )
        if response.status_code >= 400:
            raise EngineError(f"HTTP {response.status_code} from OpenAlex: {_message(response.content)}")
        try:
            data = json.loads(response.content)
        except ValueError as e:
            raise EngineError(f"OpenAlex answered with something that is not JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise EngineError("OpenAlex's answer has no `results` list")
        return [r for r in (to_result(work) for work in data["results"] if isinstance(work, dict)) if r][:max_results]


def to_result(work: dict) -> SearchResult | None:
    """One work as a search result. The page to read is its open-access copy when there is one (readable
    text), else the DOI (the publisher's page), else the landing page OpenAlex knows."""
    doi = _doi(work.get("doi"))
    oa = work.get("best_oa_location") or {}
    primary = work.get("primary_location") or {}
    candidates = [
        oa.get("landing_page_url"),
        oa.get("pdf_url"),
        (work.get("open_access") or {}).get("oa_url"),
        f"https://doi.org/{doi}" if doi else None,
        primary.get("landing_page_url"),
    ]
    url = next((u for u in candidates if isinstance(u, str) and u.startswith(("http://", "https://"))), None)
    if url is None:
        return None
    title = http.clean(work.get("display_name") or work.get("title"))
    metadata: dict = {
        "type": "paper",
        "openalex_id": str(work.get("id") or "").rsplit("/", 1)[-1],
        "authors": [
            http.clean((a.get("author") or {}).get("display_name"))
            for a in work.get("authorships") or []
            if isinstance(a, dict)
        ],
    }
    if doi:
        metadata["doi"] = doi
    if work.get("publication_date") or work.get("publication_year"):
        metadata["date"] = str(work.get("publication_date") or work.get("publication_year"))
    venue = ((primary.get("source") or {}) if isinstance(primary, dict) else {}).get("display_name")
    if venue:
        metadata["journal"] = http.clean(venue)
    return SearchResult(
        title=title or url, url=url, snippet=abstract(work.get("abstract_inverted_index"))[:500], metadata=metadata
    )


def abstract(inverted: object) -> str:
    """OpenAlex ships abstracts as {word: [positions]}; put the words back in order."""
    if not isinstance(inverted, dict):
        return ""
    placed = sorted((pos, word) for word, positions in inverted.items() for pos in positions if isinstance(pos, int))
    return " ".join(word for _, word in placed)


def _doi(value: object) -> str:
    text = str(value or "").strip()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    return text if text.startswith("10.") else ""


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        return http.clean(data.get("message") or data.get("error"))[:200]
    except (ValueError, AttributeError):
        return http.clean(body[:200].decode("utf-8", "replace"))
