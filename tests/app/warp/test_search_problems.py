"""A run whose web search is down still finishes from the stored sources, and its summary says how many
searches came back short and why (the CLI prints that as a warning under the report line)."""

from __future__ import annotations

import json

from warp_fakes import Policy, ScriptedGenerator, settings

from sala_report.app.warp import Engine, session_summary
from sala_report.app.warp import events as ev
from sala_report.retrieval import Retriever
from sala_report.retrieval.types import SearchOutcome


class RateLimitedSearch:
    """The SearchBackend protocol, answering every query the way WebSearch does when the engine refuses."""

    def __init__(self):
        self.queries: list[str] = []

    def search(self, query: str, *, max_results: int | None = None) -> SearchOutcome:
        self.queries.append(query)
        return SearchOutcome(query, [], degraded="duckduckgo: rate limited, try again in a few minutes")


def test_degraded_searches_are_counted_in_the_summary(corpus):
    store, _, ids = corpus
    search = RateLimitedSearch()
    engine = Engine.start(
        store,
        ScriptedGenerator(policy=Policy(expands=0)),
        Retriever(store, search=search),
        settings(),
        "How is renewable energy changing electricity?",
        docs_source_ids=ids,
    )
    seen: list = []
    engine.subscribe(seen.append)
    assert engine.run().status == "done"
    finished = [e for e in seen if isinstance(e, ev.SearchFinished)]
    assert search.queries and all(e.degraded for e in finished)
    summary = session_summary(store, engine.session_id)
    assert summary["searches"] == {
        "total": len(finished),
        "degraded": len(finished),
        "problems": ["duckduckgo: rate limited, try again in a few minutes"],
    }
    assert summary["citations"]["total"] > 0  # written from the stored documents all the same


def test_a_run_with_working_search_reports_no_problems(start, corpus):
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    assert engine.run().status == "done"
    searches = session_summary(corpus[0], engine.session_id)["searches"]
    assert searches["total"] >= 4 and searches["degraded"] == 0 and searches["problems"] == []


def test_the_cli_exits_partial_and_warns_when_searches_came_back_short(corpus, tmp_path, capsys):
    from sala_report.app.commands import research
    from sala_report.app.errors import EXIT_PARTIAL
    from sala_report.app.settings import Settings

    store, _, ids = corpus
    engine = Engine.start(
        store,
        ScriptedGenerator(policy=Policy(expands=0)),
        Retriever(store, search=RateLimitedSearch()),
        settings(),
        "How is renewable energy changing electricity?",
        docs_source_ids=ids,
    )
    code = research._drive(engine, store, Settings(), tmp_path / "report.md", as_json=True)
    out, err = capsys.readouterr()
    assert code == EXIT_PARTIAL and (tmp_path / "report.md").exists()
    assert "searches found less than asked (duckduckgo: rate limited" in err
    summary = json.loads(out)
    assert summary["status"] == "done" and summary["searches"]["degraded"] == summary["searches"]["total"] > 0
