"""Search engines behind one small protocol; `make_engine` builds the one a name in `search.engines` means."""

from __future__ import annotations

from sala_report.retrieval.engines.base import (
    Engine,
    EngineConfig,
    EngineError,
    EngineTimeout,
    RateLimited,
    make_engine,
)

__all__ = ["Engine", "EngineConfig", "EngineError", "EngineTimeout", "RateLimited", "make_engine"]
