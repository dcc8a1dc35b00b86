"""What the CLI says while a run goes: counts with the right plural, a failed web search in a person's words
(not the DNS library's text), citation keys as the report's [n]."""

from __future__ import annotations

from sala_report.app.commands.research import Progress
from sala_report.app.warp import events as ev
from sala_report.app.wording import plural, readable_keys, search_problem

# What ddgs reported on this machine with no network (retrieval/search.py wraps it as "web search failed (...)").
DDGS_DNS = (
    "web search failed (duckduckgo: DNSError: DNSError('error sending request for url "
    "(https://html.duckduckgo.com/html/) > error resolving DNS > DNS error: no records found for Query "
    '{ name: Name("html.duckduckgo.com."), query_type: A, query_class: IN }\'))'
)
FETCH_DNS = "could not fetch any of 4 pages (first: [Errno -3] Temporary failure in name resolution)"
RAW = ("DNSError", "Query {", "Errno", "query_class")


def test_plurals():
    assert [plural(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert plural(1, "search") == "1 search" and plural(3, "search") == "3 searches"


def test_network_failures_read_as_what_they_mean():
    said = search_problem(DDGS_DNS)
    assert said.startswith("web search failed: duckduckgo could not be reached") and "no network" in said
    fetch = search_problem(f"{DDGS_DNS}; {FETCH_DNS}")
    assert "could not read any of the 4 pages found" in fetch and "duckduckgo" in fetch
    assert not any(raw in fetch for raw in RAW), fetch
    assert "rate" in search_problem("web search failed (bing: rate limited (RatelimitException: 202 Ratelimit))")
    plain = "no results from duckduckgo (nothing matched, or the engine is rate limiting)"
    assert search_problem(plain) == plain  # already in a person's words


def test_keys_become_report_numbers():
    numbers = {"textid7": 2}
    assert readable_keys("weak support for [textid7]", numbers) == "weak support for [2]"
    said = readable_keys(
        "cite the passages you use with \\cite{textidN} (removed textid9, textid3: not among the passages)", numbers
    )
    assert "textid" not in said and "removed 2 citations of passages it was not shown" in said


def test_progress_lines_say_one_step_and_name_citations_by_number(capsys):
    progress = Progress(max_steps=140)
    events = [
        ev.RunStarted("s1", "q", True, 0, max_steps=16, web=False),
        ev.StepStarted("s1", 1, "search", None, None, 1),
        ev.SearchFinished("s1", 1, None, ("solar",), 1, DDGS_DNS),
        ev.ReferencesChanged("s1", 2, (("textid7", 4, 1),)),
        ev.SectionWritten("s1", 2, 1, "section-1", "Solar", "Prices fell [1].", 1, 0),
        ev.CitationFlagged("s1", 2, 1, "textid7", "Prices fell.", 0.1),
        ev.Finished("s1", "done", 1, "the model judged the report complete"),
    ]
    for event in events:
        progress(event)
    err = capsys.readouterr().err
    assert "[step 1/16 " in err  # the session's budget, not the settings' 140
    assert "1 passage for: solar; web search failed: duckduckgo could not be reached" in err
    assert "(3 words, 1 citation)" in err and "weak support for [1]" in err
    assert "done after 1 step (" in err
    assert not any(raw in err for raw in (*RAW, "textid", "1 steps", "1 citations", "1 passages")), err
