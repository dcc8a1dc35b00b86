"""The WARP loop with a scripted generator: every transition, rejections and retries, budgets, endings,
citations, context fitting, pause/cancel, and resuming after a failure."""

from __future__ import annotations

import threading

import pytest
from warp_fakes import Policy, ScriptedGenerator, answer, check_report, settings, shown_keys

from sala_report.app.errors import BackendUnavailable
from sala_report.app.warp import Engine, WarpStore, render_markdown, session_summary
from sala_report.app.warp import events as ev


def kinds(seen, cls=ev.StepStarted):
    return [e.kind for e in seen if isinstance(e, cls)]


def test_full_run_follows_the_released_state_machine(start, corpus):
    engine, seen = start(ScriptedGenerator(policy=Policy(expands=1)))
    result = engine.run()
    assert result.status == "done" and result.reason == "the model judged the report complete"
    assert kinds(seen) == ["search", "init-plan"] + ["search", "write"] * 3 + ["extend"] + ["search", "write"] * 2 + [
        "extend"
    ]
    assert result.steps == 14
    # every step is checkpointed, and each event follows the step that caused it
    checkpoints = [e.step for e in seen if isinstance(e, ev.Checkpointed)]
    assert checkpoints == list(range(1, 15))
    assert [type(e).__name__ for e in seen[:2]] == ["RunStarted", "StepStarted"]
    assert isinstance(seen[-1], ev.Finished) and seen[-1].status == "done"
    store = corpus[0]
    warp = WarpStore(store)
    assert [s.step for s in warp.steps(result.session_id)] == list(range(1, 15))
    journal = warp.events(result.session_id)
    assert [seq for seq, *_ in journal] == list(range(1, len(journal) + 1))
    assert {t for _, _, t, _ in journal} >= {"OutlineChanged", "SectionWritten", "Checkpointed", "Finished"}
    markdown = check_report(store, result.session_id)
    assert markdown.startswith("# Renewable energy today\n\n## 1 Solar power\n")
    assert "### 1.1 Costs" in markdown and "### 1.2 Adoption" in markdown and "## References" in markdown
    summary = session_summary(store, result.session_id)
    assert summary["status"] == "done" and summary["citations"]["total"] >= 5
    assert summary["citations"]["verified"] == summary["citations"]["total"]  # the policy quotes its passages


def test_token_deltas_stream_the_answer(start):
    engine, seen = start()
    engine.run()
    first_step = "".join(e.text for e in seen if isinstance(e, ev.TokenDelta) and e.step == 1)
    assert first_step.startswith("<thought>") and first_step.endswith("</action>")


BAD = {
    "search": ("not json at all", "no <action>"),
    "init-plan": (
        answer("x", {"name": "init-plan", "title": "T", "sections": [{"title": "A", "plan": "a"}]}),
        "must have 3 to 3 entries",
    ),
    "write": (
        answer("x", "# Heading\nSolar power grew fast over many years, as the passages say \\cite{textid1}."),
        "no headings",
    ),
    "extend": (answer("x", {"name": "extend-plan", "position": "section-9", "subsections": []}), "cannot be expanded"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_rejected_answer_is_retried_with_the_error_fed_back(start, kind):
    bad, message = BAD[kind]
    generator = ScriptedGenerator({kind: [bad]}, policy=Policy(expands=0))
    engine, seen = start(generator)
    result = engine.run()
    rejected = [e for e in seen if isinstance(e, ev.ActionRejected)]
    assert len(rejected) == 1 and rejected[0].kind == kind and rejected[0].will_retry
    assert message in rejected[0].error
    prompts = [r.prompt for k, r in generator.requests if k == kind]
    assert "rejected" not in prompts[0] and message in prompts[1]
    assert result.status == "done"
    assert result.steps == 10  # the nine steps of a run without expansion, plus the retry


@pytest.mark.parametrize(
    "bad",
    [
        answer("x", {"name": "search", "query": ["solar"]}),
        answer("x", {"name": "search", "keywords": []}),
        answer("x", {"name": "search", "keywords": ["a", "b", "c", "d", "e", "f"]}),
        answer("x", {"name": "nop"}),
        '<thought>x</thought><action>{"name": "search", "keywords": ["solar"]',
    ],
)
def test_search_validator_rejects_each_contract_breach(start, bad):
    engine, seen = start(ScriptedGenerator({"search": [bad]}, policy=Policy(expands=0)))
    assert engine.run().status == "done"
    assert [e.kind for e in seen if isinstance(e, ev.ActionRejected)] == ["search"]


def test_search_gives_up_on_the_model_and_searches_the_section_title(start):
    generator = ScriptedGenerator({"search": ["junk"] * 3}, policy=Policy(expands=0))
    engine, seen = start(generator, max_retries=2)
    assert engine.run().status == "done"
    rejected = [e for e in seen if isinstance(e, ev.ActionRejected)]
    assert [e.will_retry for e in rejected] == [True, True, False]
    searches = [e for e in seen if isinstance(e, ev.SearchFinished)]
    assert searches[0].keywords == ("How is renewable energy changing electricity?",) and searches[0].passages > 0


def test_a_section_that_never_validates_is_skipped_and_the_report_is_partial(start, corpus):
    bad = answer("x", "too short")
    generator = ScriptedGenerator(
        {
            "write": [
                lambda r: answer("ok", f"Solar output grew fast in many markets \\cite{{{shown_keys(r)[0]}}}."),
                bad,
                bad,
                bad,
            ]
        },
        policy=Policy(expands=0),
    )
    engine, seen = start(generator, max_retries=2)
    result = engine.run()
    skipped = [e for e in seen if isinstance(e, ev.SectionSkipped)]
    assert len(skipped) == 1 and result.status == "partial"
    assert kinds(seen).count("write") == 1 + 3 + 1  # section 1, three tries at section 2, section 3
    markdown = render_markdown(corpus[0], result.session_id)
    assert "## 2 Storage\n\n*How batteries balance supply*" in markdown


def test_no_valid_outline_fails_the_run(start):
    engine, seen = start(ScriptedGenerator({"init-plan": ["junk"] * 3}), max_retries=2)
    result = engine.run()
    assert result.status == "failed" and "no valid outline after 3 tries" in result.error
    assert kinds(seen) == ["search", "init-plan", "init-plan", "init-plan"]


def test_failed_expand_decisions_count_against_the_expand_budget(start):
    engine, seen = start(ScriptedGenerator({"extend": ["junk"] * 10}), max_expands=2, max_retries=5)
    result = engine.run()
    assert kinds(seen).count("extend") == 2
    assert result.status == "done" and result.reason == "the expand decision kept failing"


def test_step_budget_ends_the_run_with_a_partial_report(start, corpus):
    engine, seen = start(max_steps=5)
    result = engine.run()
    assert result.status == "partial" and result.steps == 5 and "step budget (5)" in result.reason
    markdown = render_markdown(corpus[0], result.session_id)
    assert "*Which policies helped*" in markdown  # the unwritten section shows its plan
    check_report(corpus[0], result.session_id)


def test_no_expand_budget_means_no_expand_decision(start):
    engine, seen = start(max_expands=0)
    result = engine.run()
    assert "extend" not in kinds(seen) and result.reason == "the expansion budget is used up"


def test_depth_cap_limits_what_may_be_expanded(start, corpus):
    generator = ScriptedGenerator(policy=Policy(expands=5))
    engine, seen = start(generator, max_depth=2, max_expands=5)
    result = engine.run()
    outline = WarpStore(corpus[0]).outline(result.session_id)
    assert all(not child.children for node in outline.sections for child in node.children)
    offered = [r.constraint.json_schema for k, r in generator.requests if k == "extend"]
    assert all("section-1.1" not in str(schema) for schema in offered)


def test_citations_to_unknown_passages_are_removed_and_counted(start, corpus):
    def cite_unknown(request):
        return answer(
            "x",
            f"Module prices fell by about ninety percent over a decade \\cite{{{shown_keys(request)[0]}, textid99}}.",
        )

    engine, seen = start(ScriptedGenerator({"write": [cite_unknown]}, policy=Policy(expands=0)))
    result = engine.run()
    written = [e for e in seen if isinstance(e, ev.SectionWritten)]
    assert written[0].removed_citations == 1 and "textid99" not in written[0].markdown
    assert session_summary(corpus[0], result.session_id)["citations"]["removed"] == 1
    check_report(corpus[0], result.session_id)


def test_only_unknown_citations_is_a_rejection(start):
    engine, seen = start(
        ScriptedGenerator(
            {
                "write": [
                    answer(
                        "x", "Module prices fell by about ninety percent over one decade of growth \\cite{textid42}."
                    )
                ]
            },
            policy=Policy(expands=0),
        )
    )
    engine.run()
    rejected = [e for e in seen if isinstance(e, ev.ActionRejected)]
    assert rejected[0].kind == "write" and "textid42" in rejected[0].error


def test_weakly_supported_citations_are_flagged_and_stored(start, corpus):
    def unsupported(request):
        return answer(
            "x",
            f"Penguins migrate across Antarctic ice shelves every winter season \\cite{{{shown_keys(request)[0]}}}.",
        )

    engine, seen = start(ScriptedGenerator({"write": [unsupported]}, policy=Policy(expands=0)))
    result = engine.run()
    flagged = [e for e in seen if isinstance(e, ev.CitationFlagged)]
    assert len(flagged) == 1 and flagged[0].score < 0.25 and "Penguins" in flagged[0].sentence
    stored = WarpStore(corpus[0]).citations(result.session_id)
    assert sum(c.weak for _, c in stored) == 1
    citations = session_summary(corpus[0], result.session_id)["citations"]
    assert citations["flagged"] == 1 and citations["verified"] == citations["total"] - 1


def test_prompts_fit_a_small_context_by_abbreviating_the_draft(start):
    # distinct sentences: validate_write rejects a section that says the same sentence twice
    long_text = " ".join(
        f"In year {i} solar modules became cheaper as factories grew and installers learned." for i in range(40)
    )
    generator = ScriptedGenerator(
        {"write": [lambda r, t=long_text: answer("x", f"{t} \\cite{{{shown_keys(r)[0]}}}.")] * 3},
        policy=Policy(expands=0),
        context=2200,
    )
    engine, seen = start(generator, context_tokens=2200, max_tokens=400)
    assert engine.run().status == "done"
    for kind, request in generator.requests:
        used = generator.count_tokens(request.system) + generator.count_tokens(request.prompt) + 32
        assert used <= 2200 - request.max_tokens, kind
    extend_prompt = [r.prompt for k, r in generator.requests if k == "extend"][0]
    assert "…" in extend_prompt or "(written)" in extend_prompt


def test_backend_failure_keeps_the_checkpoint_and_resume_finishes(start, corpus):
    store, retriever, _ = corpus

    def flaky(request):
        raise BackendUnavailable("the server went away")

    generator = ScriptedGenerator({"write": [Policy().write, flaky]}, policy=Policy(expands=0))
    engine, seen = start(generator)
    with pytest.raises(BackendUnavailable):
        engine.run()
    warp = WarpStore(store)
    assert warp.session(engine.session_id).status == "failed"
    assert isinstance(seen[-1], ev.Failed)
    steps_before = [s.step for s in warp.steps(engine.session_id)]
    resumed = Engine.resume(
        store, engine.session_id, ScriptedGenerator(policy=Policy(expands=0)), retriever, settings()
    )
    result = resumed.run()
    assert result.status == "done"
    steps = warp.steps(engine.session_id)
    assert [s.step for s in steps] == list(range(1, len(steps) + 1)) and steps[: len(steps_before)]
    drafts = store.db.execute(
        "SELECT node_id, COUNT(*) FROM warp_drafts WHERE session_id = ? GROUP BY node_id", [engine.session_id]
    ).fetchall()
    assert sorted(drafts) == [(1, 1), (2, 1), (3, 1)]
    check_report(store, engine.session_id)


def test_cancel_mid_generation_discards_the_step_and_resume_continues(start, corpus):
    store, retriever, _ = corpus
    generator = ScriptedGenerator(policy=Policy(expands=0), delay_s=0.01)
    engine, seen = start(generator)

    def cancel_on_first_write(event):
        if isinstance(event, ev.StepStarted) and event.kind == "write":
            threading.Timer(0.02, engine.cancel).start()

    engine.subscribe(cancel_on_first_write)
    result = engine.run()
    assert result.status == "cancelled" and result.steps == 3
    assert WarpStore(store).checkpoint(engine.session_id).phase == "write"
    resumed = Engine.resume(
        store, engine.session_id[:5], ScriptedGenerator(policy=Policy(expands=0)), retriever, settings()
    )
    assert resumed.run().status == "done"
    assert [s.step for s in WarpStore(store).steps(engine.session_id)] == list(range(1, 10))


def test_pause_holds_the_loop_and_edits_apply_while_paused(start):
    from sala_report.app.warp import edits

    engine, seen = start(ScriptedGenerator(policy=Policy(expands=0)))
    paused = threading.Event()

    def pause_after_outline(event):
        if isinstance(event, ev.OutlineChanged) and event.reason == "init-plan":
            engine.pause()
        if isinstance(event, ev.Paused):
            paused.set()

    engine.subscribe(pause_after_outline)
    worker = threading.Thread(target=engine.run)
    worker.start()
    assert paused.wait(10)
    engine.submit(edits.RenameSection(1, title="Sunlight"))
    for _ in range(200):
        if any(isinstance(e, ev.EditApplied) for e in seen):
            break
        threading.Event().wait(0.01)
    assert any(isinstance(e, ev.EditApplied) for e in seen)
    steps_while_paused = kinds(seen)
    engine.resume_run()
    worker.join(10)
    assert steps_while_paused == ["search", "init-plan"]
    assert any(isinstance(e, ev.Unpaused) for e in seen)
    written = [e for e in seen if isinstance(e, ev.SectionWritten)]
    assert written[0].title == "Sunlight"


def test_a_broken_subscriber_does_not_stop_the_run(start):
    engine, seen = start()

    def broken(event):
        raise RuntimeError("front end bug")

    engine.subscribe(broken)
    assert engine.run().status == "done"
