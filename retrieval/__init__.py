"""Retrieval: web search, fetching, extraction, the person's documents, the SQLite source store, and
evidence passages. Imports nothing of ours; the app passes settings in as plain values."""

from sala_report.retrieval.chunk import ChunkConfig
from sala_report.retrieval.documents import ingest_file, ingest_folder
from sala_report.retrieval.errors import AddressRefused, EmptyDocument, ExtractionError, RetrievalError
from sala_report.retrieval.events import (
    FetchStarted,
    SearchDegraded,
    SearchDone,
    SourceFailed,
    SourceReused,
    SourceStored,
)
from sala_report.retrieval.fetch import FetchConfig, Fetcher, FetchResult
from sala_report.retrieval.research import Retriever, store_fetched
from sala_report.retrieval.search import LocalSearch, RateLimiter, SearchBackend, SearchConfig, WebSearch
from sala_report.retrieval.store import SourceRecord, Store
from sala_report.retrieval.types import (
    GatherResult,
    IngestReport,
    Passage,
    SearchOutcome,
    SearchResult,
    Source,
)

__all__ = [
    "AddressRefused",
    "ChunkConfig",
    "EmptyDocument",
    "ExtractionError",
    "FetchConfig",
    "FetchResult",
    "FetchStarted",
    "Fetcher",
    "GatherResult",
    "IngestReport",
    "LocalSearch",
    "Passage",
    "RateLimiter",
    "RetrievalError",
    "Retriever",
    "SearchBackend",
    "SearchConfig",
    "SearchDegraded",
    "SearchDone",
    "SearchOutcome",
    "SearchResult",
    "Source",
    "SourceFailed",
    "SourceRecord",
    "SourceReused",
    "SourceStored",
    "Store",
    "WebSearch",
    "ingest_file",
    "ingest_folder",
    "store_fetched",
]
