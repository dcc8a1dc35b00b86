"""Asking a finished report (app/warp/ask.py) on a session built by the engine over a real SQLite store:
every [n] of an answer is one of the report's references with the report's number, keys the model was not
shown and bare [n] marks are removed, and the question is stored with the session."""

from __future__ import annotations

import re
import sqlite3

import pytest
from warp_fakes import ScriptedGenerator, add_sources, settings

from sala_report.app.warp import WarpStore, render_markdown
from sala_report.app.warp.ask import appendix, ask
from sala_report.app.warp.generator import GenResult
from sala_report.retrieval import Store


class Answering:
    """A Generator that answers with `write(shown keys)` and records the requests."""

    name = "answering"
    small_model = False

    def __init__(self, write):
        self.write = write
        self.requests = []

    def context_tokens(self) -> int:
        return 8192

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def generate(self, request, *, on_delta=None, cancel=None, on_restart=None) -> GenResult:
        self.requests.append(request)
        keys = re.findall(r"^\[(textid\d+)\]", request.prompt, re.M)
        return GenResult(f"<thought>-</thought><action>{self.write(keys)}</action>", "stop", 10, 10, 0.01)


def report_numbers(markdown: str) -> dict[str, int]:
    """location -> [n] from the report's References list (read independently of report.numbering)."""
    _, _, refs = markdown.partition("\n## References\n")
    return {loc: int(n) for n, loc in re.findall(r"^\[(\d+)\] .*? — (\S+)$", refs, re.M)}


@pytest.fixture
def finished(start, corpus):
    engine, _ = start(ScriptedGenerator())
    result = engine.run()
    assert result.status == "done"
    return corpus[0], result.session_id


def test_answer_cites_the_reports_own_numbers(finished):
    store, session_id = finished
    refs = report_numbers(render_markdown(store, session_id))
    assert len(refs) >= 2
    by_title = {store.source_by_location(loc).title: n for loc, n in refs.items()}
    for question in ("What happened to battery costs?", "Why did solar capacity grow?", "offshore wind turbines"):
        gen = Answering(lambda keys: f"Claim one \\cite{{{keys[0]}}}. Claim two \\cite{{{keys[-1]}}}.")
        answer = ask(store, session_id, question, gen, settings())
        titles = dict(re.findall(r"^\[(textid\d+)\] (.*)$", gen.requests[0].prompt, re.M))
        keys = list(titles)
        expected = [by_title[titles[keys[0]]], by_title[titles[keys[-1]]]]
        assert [int(n) for n in re.findall(r"\[(\d+)\]", answer.text)] == expected, (question, answer.text)
        assert [r.number for r in answer.references] == sorted(set(expected))
        assert {by_title[r.title] for r in answer.references} == set(expected)


def test_unshown_keys_and_bare_marks_are_removed(finished):
    store, session_id = finished
    gen = Answering(lambda keys: f"Costs fell \\cite{{{keys[0]}}}, see [7] and \\cite{{textid999}} too.")
    answer = ask(store, session_id, "What happened to battery costs?", gen, settings())
    assert "textid" not in answer.text and "[7]" not in answer.text
    assert "textid999" in answer.dropped and "[7]" in answer.dropped
    assert re.fullmatch(r"Costs fell \[\d+\], see and too\.", answer.text), answer.text


def test_only_sources_the_report_cites_are_searched(finished):
    store, session_id = finished
    refs = report_numbers(render_markdown(store, session_id))
    titles = {store.source_by_location(loc).title for loc in refs}
    # a source stored after the run that matches the question better than any: not one of the references
    add_sources(store, {"tides.md": ("Tidal power", ["Tidal power turbines use battery costs solar wind policy."])})
    gen = Answering(lambda keys: " ".join(f"Fact \\cite{{{k}}}." for k in keys))
    answer = ask(store, session_id, "tidal power turbines battery costs", gen, settings())
    shown = re.findall(r"^\[textid\d+\] (.*)$", gen.requests[0].prompt, re.M)
    assert shown and set(shown) <= titles and "Tidal power" not in shown
    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)} <= set(refs.values())


def test_questions_are_stored_and_make_an_appendix(finished):
    store, session_id = finished
    gen = Answering(lambda keys: f"Costs fell \\cite{{{keys[0]}}}.")
    first = ask(store, session_id, "What happened to battery costs?", gen, settings())
    ask(store, session_id, "And *solar*?", gen, settings())
    warp = WarpStore(store)
    stored = warp.questions(session_id)
    assert [q for q, _, _ in stored] == ["What happened to battery costs?", "And *solar*?"]
    assert [r.source_id for r in first.references] == stored[0][2]
    text = appendix(warp, session_id)
    assert text.startswith("## Questions and answers") and first.text in text and "And \\*solar\\*?" in text


def test_the_appendix_follows_the_reports_numbering_as_it_changes(finished):
    """Asked while numbers were one way, exported after the report's first sections changed order (as a run
    going on or an edit may do): the answer's [n] is its source's number in the References as they are now."""
    store, session_id = finished
    gen = Answering(lambda keys: f"Costs fell \\cite{{{keys[0]}}}.")
    first = ask(store, session_id, "What happened to battery costs?", gen, settings())
    (source,) = [r.source_id for r in first.references]
    before = report_numbers(render_markdown(store, session_id))
    rows = store.db.execute(
        "SELECT node_id, content FROM warp_nodes WHERE session_id = ? AND content IS NOT NULL ORDER BY ord",
        [session_id],
    ).fetchall()
    contents = [c for _, c in rows]
    with store.lock:
        for (node_id, _), content in zip(rows, contents[::-1], strict=True):
            store.db.execute(
                "UPDATE warp_nodes SET content = ? WHERE session_id = ? AND node_id = ?", [content, session_id, node_id]
            )
        store.db.conn.commit()
    after = report_numbers(render_markdown(store, session_id))
    location = store.source(source).location
    assert before[location] != after[location]  # the swap did renumber this source
    text = appendix(WarpStore(store), session_id)
    assert re.findall(r"\[(\d+)\]", text.split("**Q1.", 1)[1]) == [str(after[location])]


def test_evidence_mode_answers_with_verbatim_sentences(finished):
    store, session_id = finished
    sentence = "Battery costs dropped sharply as factories scaled up production of lithium-ion cells."

    def choose(keys):
        return "not a sentence of any passage \\cite{textid1}."  # rejected by check_chosen: the closest are used

    gen = Answering(choose)
    gen.small_model = True
    answer = ask(store, session_id, "Why did battery costs drop?", gen, settings(writing="evidence"))
    assert answer.mode == "evidence"
    assert sentence.rstrip(".") in answer.text and re.search(r"\[\d+\]\.", answer.text)


def test_empty_question_is_refused(finished):
    store, session_id = finished
    with pytest.raises(ValueError, match="expected a question"):
        ask(store, session_id, "  ", Answering(lambda keys: ""), settings())


def test_migration_adds_the_table_to_a_store_made_by_the_old_schema(tmp_path):
    from sala_report.app.warp import store as warp_store

    path = tmp_path / "old.db"
    old = Store.open(path)
    old.apply_migrations("warp", warp_store.MIGRATIONS[:3])  # the schema before questions were stored
    old.close()
    assert "warp_questions" not in {
        r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    store = Store.open(path)
    try:
        warp = WarpStore(store)
        assert warp.questions("nope") == []
    finally:
        store.close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "warp_questions" in tables


def test_a_search_never_brings_back_a_source_the_person_excluded(finished):
    """`ask --search` may add new sources, but not one the person excluded from the session."""
    from sala_report.app.warp.exclusion import exclude_stored
    from sala_report.app.warp.phases import Budget

    store, session_id = finished
    warp = WarpStore(store)
    refs = report_numbers(render_markdown(store, session_id))
    excluded_location = next(loc for loc, n in refs.items() if n == 1)
    excluded_id = store.source_by_location(excluded_location).id
    exclude_stored(warp, session_id, 1, rewrite=False, budget=Budget(60, 0, 3, 2))
    kept = {store.source_by_location(loc).id for loc, n in refs.items() if n != 1}

    def gather(text, k, source_ids):  # a search that finds the excluded source's passages again
        return store.passages(text, k, source_ids=kept | {excluded_id}), None

    gen = Answering(lambda keys: " ".join(f"Fact \\cite{{{k}}}." for k in keys))
    answer = ask(store, session_id, "battery costs solar wind policy", gen, settings(), gather=gather)
    assert excluded_id not in {r.source_id for r in answer.references}
    shown_titles = re.findall(r"^\[textid\d+\] (.*)$", gen.requests[0].prompt, re.M)
    assert store.source_by_location(excluded_location).title not in shown_titles
