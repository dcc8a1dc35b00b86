"""arXiv through its public API (an Atom feed). arXiv's terms ask for one call every 3 seconds.

Traps of the feed (from arXiv's API manual): a malformed query still answers HTTP 200, with one entry
titled "Error"; a throttled client may get a plain-text "Rate exceeded." instead of a feed; entry ids
carry a version suffix (`2101.00001v2`) and titles and abstracts arrive hard-wrapped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from sala_report.retrieval.engines import http
from sala_report.retrieval.engines.base import EngineConfig, EngineError, RateLimited
from sala_report.retrieval.types import SearchResult

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
_ID = re.compile(r"arxiv\.org/abs/(.+?)(v\d+)?$")
_WORD = re.compile(r"[\w.-]+", re.UNICODE)
_OPERATORS = {"and", "or", "andnot"}
MAX_TERMS = 8


class ArxivEngine:
    name = "arxiv"
    min_interval_s = 3.0

    def __init__(self, config: EngineConfig):
        self.config = config

    def search(self, query: str, *, max_results: int) -> list[SearchResult]:
        terms = [w for w in _WORD.findall(query) if w.lower() not in _OPERATORS][:MAX_TERMS]
        if not terms:
            return []
        # Every word in title, abstract, authors or comments: the API has no free-text mode, and ORed
        # words rank papers that share one common word as highly as the right ones.
        params = {
            "search_query": " AND ".join(f"all:{t}" for t in terms),
            "start": 0,
            "max_results": max_results,
            "sortBy": "relevance",
            "sortOrder": "descending",
        }
        response = http.get(
            self.config.arxiv_url,
            params,
            engine=self.name,
            timeout_s=self.config.timeout_s,
            user_agent=self.config.user_agent,
            accept="application/atom+xml",
        )
        if response.status_code >= 400:
            raise EngineError(f"HTTP {response.status_code} from arXiv")
        return parse_feed(response.content)[:max_results]


def parse_feed(body: bytes) -> list[SearchResult]:
    if body.lstrip().lower().startswith(b"rate exceeded"):
        raise RateLimited("arXiv says: Rate exceeded")
    try:
        feed = ET.fromstring(body)
    except ET.ParseError as e:
        raise EngineError(f"arXiv answered with something that is not an Atom feed ({e})") from e
    if feed.tag != f"{ATOM}feed":
        raise EngineError(f"arXiv answered with <{feed.tag}>, not an Atom feed")
    results = []
    for entry in feed.iter(f"{ATOM}entry"):
        entry_id = http.clean(entry.findtext(f"{ATOM}id"))
        title = http.clean(entry.findtext(f"{ATOM}title"))
        summary = http.clean(entry.findtext(f"{ATOM}summary"))
        if "/api/errors" in entry_id or title == "Error":
            raise EngineError(f"arXiv rejected the query: {summary or entry_id}")
        match = _ID.search(entry_id)
        if not match:
            continue
        arxiv_id = match.group(1)
        metadata = {
            "arxiv_id": arxiv_id,
            "type": "paper",
            "authors": [http.clean(a.findtext(f"{ATOM}name")) for a in entry.iter(f"{ATOM}author")],
            "date": http.clean(entry.findtext(f"{ATOM}published"))[:10],
        }
        for key, tag in (("doi", "doi"), ("journal", "journal_ref")):
            value = http.clean(entry.findtext(f"{ARXIV}{tag}"))
            if value:
                metadata[key] = value
        results.append(
            SearchResult(
                title=title or arxiv_id,
                url=f"https://arxiv.org/abs/{arxiv_id}",
                snippet=summary[:500],
                metadata=metadata,
            )
        )
    return results
