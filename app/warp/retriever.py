"""What the engine needs of retrieval: one call that searches, stores what it finds and ranks passages.

`sala_report.retrieval.research.Retriever` is the real one; the engine never imports retrieval at run time,
so the types below are named for checkers only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sala_report.retrieval.events import (
        FetchStarted,
        SearchDegraded,
        SearchDone,
        SourceFailed,
        SourceReused,
        SourceStored,
    )
    from sala_report.retrieval.types import GatherResult

    # What `gather` reports through `on_event`; the engine passes these on to its subscribers unchanged.
    RetrievalEvent = SearchDone | SearchDegraded | FetchStarted | SourceStored | SourceFailed | SourceReused


class Retriever(Protocol):
    def gather(
        self,
        queries: list[str],
        k: int,
        *,
        source_ids: set[int] | None = None,
        on_event: Callable[[object], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GatherResult:
        """Search for each query, store the new pages, and rank `k` passages from `source_ids` plus the pages
        the searches led to (the whole store when None). Stops early when `cancel` is set."""
        ...
