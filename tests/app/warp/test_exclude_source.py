"""Excluding a source: its citations leave the report, the sections that cited it are written again, it is
never shown to the model again in that session, and all of this survives a crash."""

from __future__ import annotations

import json

import pytest
from warp_fakes import Policy, ScriptedGenerator, check_report, settings, shown_passages

from sala_report.app.errors import BackendUnavailable, UsageError
from sala_report.app.warp import Engine, WarpStore, edits
from sala_report.app.warp import events as ev
from sala_report.app.warp.citations import Registry, cited_keys, drop_source_keys
from sala_report.app.warp.exclusion import after_exclusion, exclude_stored
from sala_report.app.warp.phases import Budget, RunState
from sala_report.app.warp.state import walk


def _source_of_first_citation(engine: Engine) -> int:
    text = next(loc.node.content for loc in walk(engine.outline) if loc.node.content)
    return engine.registry.get(cited_keys(text)[0]).source_id


def _citing(store, session_id: str, source_id: int) -> list[int]:
    wstore = WarpStore(store)
    registry = wstore.registry(session_id)
    return [
        loc.node.id
        for loc in walk(wstore.outline(session_id))
        if any(registry.get(k).source_id == source_id for k in cited_keys(loc.node.content or ""))
    ]


def _texts_of(store, source_id: int) -> list[str]:
    return [c for c in store.source(source_id).text.split("\n\n") if c.strip()]


def _shown_after(generator: ScriptedGenerator, first: int) -> str:
    return "\n".join(text for _, request in generator.requests[first:] for text in shown_passages(request).values())


def test_excluded_mid_run_it_leaves_the_report_and_is_never_shown_again(start, corpus):
    store, _, _ = corpus
    holder: dict = {}

    def excludes_then_writes(request):
        engine = holder["engine"]
        holder["source"] = source = _source_of_first_citation(engine)
        holder["citing"] = [
            loc.node.id
            for loc in walk(engine.outline)
            if any(engine.registry.get(k).source_id == source for k in cited_keys(loc.node.content or ""))
        ]
        engine.submit(edits.ExcludeSource(source, label="the first source"))
        return Policy().write(request)

    generator = ScriptedGenerator({"write": [None, excludes_then_writes]}, policy=Policy(expands=0))
    generator.script["write"][0] = Policy().write
    engine, seen = start(generator)
    holder["engine"] = engine

    def note_apply(event):
        if isinstance(event, ev.EditApplied):
            holder["applied_at"] = len(generator.requests)

    engine.subscribe(note_apply)
    assert engine.run().status == "done"

    source = holder["source"]
    assert holder["citing"], "the scripted run should have cited the source before it was excluded"
    assert _citing(store, engine.session_id, source) == []
    rewritten = [e.node_id for e in seen if isinstance(e, ev.SectionWritten)]
    for node_id in holder["citing"]:
        assert rewritten.count(node_id) == 2, "a section that cited the source is written again"
    shown = _shown_after(generator, holder["applied_at"])
    assert shown and not any(text in shown for text in _texts_of(store, source))
    markdown = check_report(store, engine.session_id)
    assert store.source(source).location not in markdown
    assert WarpStore(store).pending_edits(engine.session_id) == []


def test_an_exclusion_queued_as_the_run_dies_is_applied_on_resume(start, corpus):
    store, retriever, _ = corpus
    holder: dict = {}

    def dies_after_excluding(request):
        holder["source"] = source = _source_of_first_citation(holder["engine"])
        holder["engine"].submit(edits.ExcludeSource(source))
        raise BackendUnavailable("the process died here")

    engine, _ = start(ScriptedGenerator({"write": [Policy().write, dies_after_excluding]}, policy=Policy(expands=0)))
    holder["engine"] = engine
    with pytest.raises(BackendUnavailable):
        engine.run()
    assert _citing(store, engine.session_id, holder["source"])  # not applied yet, but stored

    generator = ScriptedGenerator(policy=Policy(expands=0))
    resumed = Engine.resume(store, engine.session_id, generator, retriever, settings())
    assert resumed.run().status == "done"
    assert _citing(store, engine.session_id, holder["source"]) == []
    assert not any(text in _shown_after(generator, 0) for text in _texts_of(store, holder["source"]))
    check_report(store, engine.session_id)


def test_an_applied_exclusion_holds_after_a_crash(start, corpus):
    """The exclusion is applied, then the process dies: the resumed run still never uses the source."""
    store, retriever, _ = corpus
    holder: dict = {}

    def excludes(request):
        holder["source"] = _source_of_first_citation(holder["engine"])
        holder["engine"].submit(edits.ExcludeSource(holder["source"]))
        return Policy().write(request)

    def dies(request):
        raise BackendUnavailable("the process died here")

    script = {"write": [Policy().write, excludes], "search": [Policy().search, Policy().search, Policy().search, dies]}
    engine, seen = start(ScriptedGenerator(script, policy=Policy(expands=0)))
    holder["engine"] = engine
    with pytest.raises(BackendUnavailable):
        engine.run()
    assert any(isinstance(e, ev.EditApplied) for e in seen)

    generator = ScriptedGenerator(policy=Policy(expands=0))
    resumed = Engine.resume(store, engine.session_id, generator, retriever, settings())
    assert resumed.excluded == {holder["source"]}
    assert resumed.run().status == "done"
    assert not any(text in _shown_after(generator, 0) for text in _texts_of(store, holder["source"]))
    assert _citing(store, engine.session_id, holder["source"]) == []
    check_report(store, engine.session_id)


def test_excluding_from_a_stored_session_keeps_the_text_or_rewrites_it(start, corpus):
    store, retriever, _ = corpus
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    assert engine.run().status == "done"
    wstore = WarpStore(store)
    before = check_report(store, engine.session_id)
    budget = Budget(60, 0, 3, 2)

    with pytest.raises(UsageError, match=r"no reference \[99\]"):
        exclude_stored(wstore, engine.session_id, 99, rewrite=False, budget=budget)
    assert wstore.pending_edits(engine.session_id) == []

    location = before.partition("\n## References\n")[2].strip().splitlines()[0].rsplit(" — ", 1)[1]
    source = store.source_by_location(location).id
    done = exclude_stored(wstore, engine.session_id, 1, rewrite=False, budget=budget)
    assert (done.source_id, done.rewrite_sections) == (source, 0)
    after = check_report(store, engine.session_id)
    assert location not in after and _citing(store, engine.session_id, source) == []
    assert wstore.session(engine.session_id).status == "done"  # every section still has text

    _, second = next(
        (n, loc) for n, loc in enumerate(after.partition("\n## References\n")[2].strip().splitlines()) if loc
    )
    second_source = store.source_by_location(second.rsplit(" — ", 1)[1]).id
    cited_it = _citing(store, engine.session_id, second_source)
    done = exclude_stored(wstore, engine.session_id, 1, rewrite=True, budget=budget)
    assert done.rewrite_sections == len(cited_it) > 0
    assert wstore.session(engine.session_id).status == "partial"
    unwritten = [loc.node.id for loc in walk(wstore.outline(engine.session_id)) if loc.node.content is None]
    assert unwritten == cited_it

    generator = ScriptedGenerator(policy=Policy(expands=0))
    resumed = Engine.resume(store, engine.session_id, generator, retriever, settings())
    assert resumed.run().status == "done"
    final = check_report(store, engine.session_id)
    shown = _shown_after(generator, 0)
    for gone in (source, second_source):
        assert store.source(gone).location not in final
        assert not any(text in shown for text in _texts_of(store, gone))


def test_a_sentence_only_the_source_supported_goes_and_shared_ones_keep_their_other_citation():
    text = (
        "Alpha grew \\cite{textid1}. Beta fell \\cite{textid2, textid1}. Gamma held. \\cite{textid1} "
        "Delta rose \\cite{textid3}.\n\n- Only one \\cite{textid1}.\n- Another \\cite{textid3}."
    )
    cleaned, dropped = drop_source_keys(text, {"textid1"})
    assert cleaned == "Beta fell \\cite{textid2}. Delta rose \\cite{textid3}.\n\n- Another \\cite{textid3}."
    assert dropped == 3
    assert drop_source_keys(text, {"textid9"}) == (text, 0)


def test_new_keys_never_reuse_an_excluded_passage_key():
    from sala_report.app.warp.citations import Entry

    registry = Registry(
        [Entry("textid1", "a", 1, "A", "/a", "file", "x"), Entry("textid2", "b", 2, "B", "/b", "file", "y")]
    )
    shown = registry.without_sources({2})
    assert shown.get("textid2") is None and shown.get("textid1") is not None
    entry, new = shown.add("c", 3, "C", "/c", "file", "z")
    assert new and entry.key == "textid3"


def test_a_write_left_without_evidence_searches_again():
    registry = Registry()
    a, _ = registry.add("a", 1, "A", "/a", "file", "alpha")
    b, _ = registry.add("b", 2, "B", "/b", "file", "beta")
    run = RunState("write", 4, 0, 1, 7, [a.key, b.key])
    kept = after_exclusion(run, edits.ExcludeSource(1), registry)
    assert (kept.phase, kept.evidence) == ("write", [b.key])
    gone = after_exclusion(kept, edits.ExcludeSource(2), registry)
    assert (gone.phase, gone.target, gone.evidence) == ("search", 7, [])


def test_excluding_an_unknown_source_is_refused(start):
    engine, seen = start(ScriptedGenerator(policy=Policy(expands=0)))
    engine.submit(edits.ExcludeSource(12345))
    assert engine.run().status == "done"
    rejected = [e for e in seen if isinstance(e, ev.EditRejected)]
    assert len(rejected) == 1 and "never shown" in rejected[0].reason
    assert edits.from_dict(edits.to_dict(edits.ExcludeSource(3, rewrite=False))) == edits.ExcludeSource(
        3, rewrite=False
    )


def test_steps_after_an_exclusion_never_see_its_passages(start, corpus, monkeypatch):
    """Evidence mode falls back on every passage of the registry, so the steps get one without the source."""
    from sala_report.app.warp import steps

    store, _, _ = corpus
    holder: dict = {"registries": []}
    write = steps.STEPS["write"]

    def spying_write(ctx):
        holder["registries"].append((holder.get("source"), set(ctx.registry.source_ids())))
        return write(ctx)

    monkeypatch.setitem(steps.STEPS, "write", spying_write)

    def excludes(request):
        holder["source"] = _source_of_first_citation(holder["engine"])
        holder["engine"].submit(edits.ExcludeSource(holder["source"]))
        return Policy().write(request)

    engine, _ = start(ScriptedGenerator({"write": [Policy().write, excludes]}, policy=Policy(expands=0)))
    holder["engine"] = engine
    assert engine.run().status == "done"
    after = [ids for source, ids in holder["registries"][2:]]
    assert after and all(holder["source"] not in ids for ids in after)


def test_a_write_whose_only_evidence_was_excluded_searches_again(start, corpus):
    store, _, _ = corpus
    keep = store.source_by_location("/docs/policy.md").id
    others = [store.source_by_location(f"/docs/{n}.md").id for n in ("solar", "batteries", "wind")]
    holder: dict = {}

    def excludes_while_searching(request):
        for source in others:
            holder["engine"].submit(edits.ExcludeSource(source))
        return answer_wind()

    def answer_wind():
        from warp_fakes import answer

        return answer("wind", {"name": "search", "keywords": ["offshore wind turbines steadier sea winds"]})

    generator = ScriptedGenerator({"search": [Policy().search, excludes_while_searching]}, policy=Policy(expands=0))
    engine, seen = start(generator, passages_per_search=1)
    holder["engine"] = engine
    assert engine.run().status == "done"
    first = engine.outline.sections[0]
    cited = {engine.registry.get(k).source_id for k in cited_keys(first.content or "")}
    assert cited == {keep}, first.content
    searches = [e for e in seen if isinstance(e, ev.SearchFinished) and e.node_id == first.id]
    assert len(searches) == 2  # the wind passage was dropped from the write: it searched again


def test_the_cli_excludes_a_reference_of_a_stored_session(tmp_path, capsys):
    from warp_fakes import add_sources

    from sala_report.app.cli import main
    from sala_report.retrieval import Retriever, Store

    store = Store.open(tmp_path / "sala.db")
    ids = add_sources(store)
    generator = ScriptedGenerator(policy=Policy(expands=0))
    engine = Engine.start(
        store, generator, Retriever(store), settings(), "How is energy changing?", docs_source_ids=ids
    )
    assert engine.run().status == "done"
    location = check_report(store, engine.session_id).partition("\n## References\n")[2].split(" — ")[1].split()[0]
    store.close()

    assert main(["--data-dir", str(tmp_path), "sources", "exclude", engine.session_id[:8], "1", "--keep-text"]) == 0
    assert "excluded [1]" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "sources", "exclude", engine.session_id, "1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["session_id"] == engine.session_id and payload["label"].startswith("[1] ")
    assert main(["--data-dir", str(tmp_path), "sources", "exclude", engine.session_id[:8], "42"]) != 0
    assert "no reference [42]" in capsys.readouterr().err

    store = Store.open(tmp_path / "sala.db")
    try:
        assert location not in check_report(store, engine.session_id)
    finally:
        store.close()


def test_a_locked_section_keeps_its_cleaned_text_and_the_summary_forgets_the_source(start, corpus):
    from sala_report.app.warp import session_summary

    store, retriever, _ = corpus
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    assert engine.run().status == "done"
    source = _source_of_first_citation(engine)
    node = next(loc.node for loc in walk(engine.outline) if loc.node.id in _citing(store, engine.session_id, source))
    keys = {k for k, e in engine.registry.entries.items() if e.source_id == source}
    expected, _ = drop_source_keys(node.content, keys)

    resumed = Engine.resume(
        store, engine.session_id, ScriptedGenerator(policy=Policy(expands=0)), retriever, settings()
    )
    resumed.submit(edits.LockSection(node.id))
    resumed.submit(edits.ExcludeSource(source))
    assert resumed.run().status == "done"
    kept = next(loc.node for loc in walk(WarpStore(store).outline(engine.session_id)) if loc.node.id == node.id)
    assert kept.content == expected
    summary = session_summary(store, engine.session_id)
    assert summary["excluded_sources"] == [source]
    assert source not in {s["source_id"] for s in summary["sources"]}
    wstore = WarpStore(store)
    stored = wstore.citations(engine.session_id)
    assert any(c.key in keys for _, c in stored)  # the locked section's old checks are still stored ...
    cited = {loc.node.id: set(cited_keys(loc.node.content or "")) for loc in walk(wstore.outline(engine.session_id))}
    still = [c for n, c in stored if c.key in cited[n]]
    assert summary["citations"]["total"] == len(still)  # ... but count for nothing
    check_report(store, engine.session_id)


def test_a_session_another_process_runs_is_not_changed_behind_its_back(start, corpus):
    store, _, _ = corpus
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    assert engine.run().status == "done"
    wstore = WarpStore(store)
    with wstore.transaction():
        store.db.execute(
            "UPDATE warp_sessions SET status = 'running', owner = 'another-host:1' WHERE id = ?", [engine.session_id]
        )
    outline = wstore.outline(engine.session_id)
    with pytest.raises(UsageError, match="another process"):
        exclude_stored(wstore, engine.session_id, 1, rewrite=True, budget=Budget(60, 0, 3, 2))
    assert wstore.outline(engine.session_id) == outline and wstore.pending_edits(engine.session_id) == []
