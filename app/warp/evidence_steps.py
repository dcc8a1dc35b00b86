"""The WARP steps in evidence mode (evidence.py): the model chooses keywords, headings and sentences
from what the documents hold; its answers go through the usual validators plus a check that every
choice is one it was offered. The retrieval half and what follows a valid answer are steps.py's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sala_report.app.warp import steps
from sala_report.app.warp.actions import ActionError, ExtendPlan, parse_response
from sala_report.app.warp.choice_grammar import (
    extend_choice_constraint,
    keywords_constraint,
    outline_constraint,
    sentences_constraint,
)
from sala_report.app.warp.citations import Entry, content_words
from sala_report.app.warp.decoding import Decoding
from sala_report.app.warp.evidence import (
    LEAD_CHARS,
    Heading,
    check_chosen,
    folded,
    heading_choices,
    keyword_choices,
    one_line,
    sentence_choices,
    used_sentences,
)
from sala_report.app.warp.generator import GenRequest, GenResult
from sala_report.app.warp.grammar import Constraint
from sala_report.app.warp.phases import moved_to
from sala_report.app.warp.prompts import Prompt, fit, render
from sala_report.app.warp.state import Located, find, walk
from sala_report.app.warp.validate import Limits, validate_extend, validate_init_plan, validate_search, validate_write

StepContext, StepOutcome = steps.StepContext, steps.StepOutcome

SENTENCES = (2, 4)  # sentences a section chooses: at least, at most
SENTENCE_CHOICES = 8  # sentences offered to one WRITE: the closest, so that any choice is on topic
HEADING_CHOICES = 10  # headings offered to INIT-PLAN, and per section to EXPAND


def _ask(
    ctx: StepContext,
    template: str,
    constraint_for: Callable[[Prompt], Constraint],
    max_tokens: int,
    *,
    entries: list[Entry] = (),
    values: dict | None = None,
) -> tuple[Prompt, GenResult]:
    """One model call with the compact system prompt and an evidence-mode template; forced tokens fed
    in chunks."""
    s = ctx.settings
    max_tokens = min(max_tokens, ctx.context_tokens // 2)

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            f"compact/{template}",
            question=ctx.question,
            evidence=evidence,
            feedback=ctx.run.feedback,
            clarified=steps.clarified_text(ctx.brief),  # the person's answers (clarify.py), whatever the mode
            **(values or {}),
        )

    prompt = fit(
        build,
        ctx.outline,
        list(entries),
        count=ctx.generator.count_tokens,
        budget=ctx.context_tokens - max_tokens,
        passage_chars=s.passage_chars,
        style="compact",
    )
    temperature = s.temperature if ctx.run.attempt == 1 else max(s.temperature, steps.RETRY_TEMPERATURE)
    request = GenRequest(
        prompt.system,
        prompt.user,
        constraint_for(prompt) if s.constrained else None,
        max_tokens,
        temperature,
        s.top_p,
        s.repetition_penalty,
        ("</action>",),
        seed=ctx.step,
        decoding=Decoding(fast_forward=True),
    )
    result = ctx.generator.generate(request, on_delta=ctx.on_delta, cancel=ctx.cancel, on_restart=ctx.on_restart)
    if result.finish_reason == "cancelled" or ctx.cancel.is_set():
        raise steps.Cancelled()
    return prompt, result


def _limits(ctx: StepContext) -> Limits:
    """Headings and sentences are chosen, not written: their lengths need no shrinking with max_tokens."""
    lim = ctx.limits
    return replace(
        lim,
        title_chars=max(lim.title_chars, 80),
        plan_chars=max(lim.plan_chars, 240),
        keyword_chars=max(lim.keyword_chars, 60),
    )


def _tokens(ctx: StepContext, texts: list[str], n: int) -> int:
    """Tokens of the `n` longest of `texts`: what an answer choosing `n` of them may need."""
    return sum(sorted((ctx.generator.count_tokens(t) + 2 for t in texts), reverse=True)[:n])


def _failed(ctx: StepContext, kind: str, node_id: int | None, result: GenResult, error: str):
    """(outcome to return when a retry is allowed or None, record, events)."""
    retry, events = steps._rejection(ctx, kind, error)
    record = steps._record(ctx, kind, node_id, result, error=error)
    return (StepOutcome(steps._retry(ctx, error), ctx.outline, record, events) if retry else None), record, events


def choose_keywords(ctx: StepContext) -> StepOutcome:
    loc = find(ctx.outline, ctx.run.target) if ctx.run.target is not None else None
    title, plan = (loc.node.title, loc.node.plan) if loc is not None else ("", "")
    limits = _limits(ctx)
    phrases = keyword_choices(ctx.question, title, plan, used=ctx.run.searched, max_chars=limits.keyword_chars)
    if len(phrases) <= 1:  # nothing to choose: search what is left, or the title again
        return steps.gather_step(ctx, loc, phrases or [title or ctx.question], None, None, [])
    high = min(limits.max_keywords, len(phrases))
    _, result = _ask(
        ctx,
        "search_evidence.jinja",
        lambda p: keywords_constraint(phrases, high),
        _tokens(ctx, phrases, high) + 32,
        values={"title": title, "phrases": phrases},
    )
    try:
        keywords = list(validate_search(parse_response(result.text).action, limits).keywords)
        _offered(keywords, phrases, "keyword")
    except ActionError as e:
        outcome, _, events = _failed(ctx, "search", ctx.run.target, result, str(e))
        return outcome or steps.gather_step(ctx, loc, phrases[:1], result, str(e), events)
    return steps.gather_step(ctx, loc, keywords, result, None, [])


def _offered(chosen: list[str], offered: list[str], what: str) -> None:
    allowed = {folded(o) for o in offered}
    for value in chosen:
        if folded(value) not in allowed:
            raise ActionError(f"choose each {what} from the list given; {value!r} is not in it")


def choose_outline(ctx: StepContext) -> StepOutcome | None:
    """None when the evidence holds fewer headings than the outline needs sections (steps.py then asks
    the model to write the titles itself)."""
    limits = _limits(ctx)
    shown = [e for e in (ctx.registry.get(k) for k in ctx.run.evidence) if e is not None]
    everything = shown + [e for e in ctx.registry.entries.values() if e.key not in set(ctx.run.evidence)]
    headings = heading_choices(
        everything, question=ctx.question, title_chars=limits.title_chars, plan_chars=limits.plan_chars
    )[:HEADING_CHOICES]
    if len(headings) < limits.min_sections:
        return None
    titles = [" ".join(ctx.question.split())]  # the report answers the question: it is its title
    pairs = [(h.title, h.plan) for h in headings]
    high = min(limits.max_sections, len(pairs))
    budget = _tokens(ctx, [f'{{"title": "{t}", "plan": "{p}"}}' for t, p in pairs], high) + _tokens(ctx, titles, 1) + 48
    _, result = _ask(
        ctx,
        "init_plan_evidence.jinja",
        lambda p: outline_constraint(titles, pairs, limits.min_sections, high),
        budget,
        values={"headings": headings, "min_sections": limits.min_sections, "max_sections": high},
    )
    try:
        plan = validate_init_plan(parse_response(result.text).action, limits, ctx.question)
        _offered([s.title for s in plan.sections], [t for t, _ in pairs], "section title")
    except ActionError as e:
        outcome, record, events = _failed(ctx, "init-plan", None, result, str(e))
        if outcome is not None:
            return outcome
        run = moved_to(steps._stepped(ctx.run, ctx.step), "done", reason="the model gave no valid outline")
        return StepOutcome(
            run,
            ctx.outline,
            record,
            events,
            status="failed",
            error=f"no valid outline after {ctx.run.attempt} tries: {e}",
        )
    return steps.planned(ctx, plan, result)


def choose_sentences(ctx: StepContext, loc: Located) -> StepOutcome:
    node = loc.node
    topic = f"{node.title}. {node.plan}"
    used = used_sentences(l.node.content for l in walk(ctx.outline) if l.node.id != node.id)
    entries = [e for e in (ctx.registry.get(k) for k in ctx.run.evidence) if e is not None]
    choices = sentence_choices(entries, question=ctx.question, topic=topic, used=used, limit=SENTENCE_CHOICES)
    if len(choices) < SENTENCES[1]:  # the search's passages are used up: add the closest passages seen before
        words = content_words(topic)
        others = sorted(
            (e for e in ctx.registry.entries.values() if e.key not in set(ctx.run.evidence)),
            key=lambda e: -len(content_words(e.text) & words),
        )
        entries += others[: ctx.settings.passages_per_search]
        choices = sentence_choices(entries, question=ctx.question, topic=topic, used=used, limit=SENTENCE_CHOICES)
    keys = {c.key for c in choices}
    entries = [e for e in entries if e.key in keys]  # show only passages there is something to choose from
    if not choices:
        return steps.skip_section(ctx, loc, None, [], reason="no unused sentence in the passages found for it")
    high = min(SENTENCES[1], len(choices))
    low = min(SENTENCES[0], high)

    def constraint(prompt: Prompt) -> Constraint:
        """Only sentences the prompt still shows (fitting it may drop or shorten passages)."""
        text, shown = one_line(prompt.user), {e.key for e in prompt.evidence}
        offered = [c.cited for c in choices if c.text in text and c.key in shown] or [c.cited for c in choices]
        return sentences_constraint(offered, min(low, len(offered)), high, lead_chars=LEAD_CHARS)

    budget = _tokens(ctx, [c.cited for c in choices], high) + LEAD_CHARS // 3 + 32
    prompt, result = _ask(
        ctx, "write_evidence.jinja", constraint, budget, entries=entries, values={"title": node.title}
    )
    try:
        action = validate_write(
            parse_response(result.text).action,
            _limits(ctx),
            ctx.question,
            {e.key for e in prompt.evidence},
            require_citation=True,
        )
        check_chosen(action.content, ctx.registry.entries, used=used)
    except ActionError as e:
        outcome, record, events = _failed(ctx, "write", node.id, result, str(e))
        return outcome or steps.skip_section(ctx, loc, record, events)
    return steps.written(ctx, loc, action, result)


def _subtopics(ctx: StepContext, loc: Located, taken: list[str]) -> list[Heading]:
    """Headings of the passages a section cites, then of other passages of the same documents: the
    section's own sources say what its parts are."""
    from sala_report.app.warp.citations import cited_keys

    cited = [e for e in (ctx.registry.get(k) for k in cited_keys(loc.node.content or "")) if e is not None]
    sources = {e.source_id for e in cited}
    near = [e for e in ctx.registry.entries.values() if e not in cited and e.source_id in sources]
    limits = _limits(ctx)
    return heading_choices(
        cited + near,
        question=ctx.question,
        taken=taken,
        title_chars=limits.title_chars,
        plan_chars=limits.plan_chars,
        documents=False,
        topic=loc.node.title,
    )[:HEADING_CHOICES]


def choose_subsections(ctx: StepContext, positions: list[str], forced: list[str]) -> StepOutcome:
    limits, budget = _limits(ctx), ctx.budget
    locs = {loc.position: loc for loc in walk(ctx.outline)}
    taken = [ctx.outline.title, *(loc.node.title for loc in locs.values())]
    options = {p: [(h.title, h.plan) for h in _subtopics(ctx, locs[p], taken)] for p in positions}
    options = {p: pairs for p, pairs in options.items() if len(pairs) >= limits.min_subsections}
    run = steps._stepped(ctx.run, ctx.step)
    if not options:
        return StepOutcome(
            moved_to(
                steps._stepped(ctx.run, ctx.step - 1), "done", reason="the evidence holds no subtopics for any section"
            ),
            ctx.outline,
            None,
        )
    high = limits.max_subsections
    listing = [(p, locs[p].node.title, [t for t, _ in options.get(p, [])]) for p in positions]
    texts = [f'{{"title": "{t}", "plan": "{q}"}}' for pairs in options.values() for t, q in pairs]
    _, result = _ask(
        ctx,
        "extend_evidence.jinja",
        lambda p: extend_choice_constraint(options, limits.min_subsections, high, allow_nop=not forced),
        _tokens(ctx, texts, high) + 64,
        values={
            "options": listing,
            "forced": forced,
            "min_subsections": limits.min_subsections,
            "max_subsections": high,
        },
    )
    run.extends += 1
    try:
        action = validate_extend(
            parse_response(result.text).action, limits, ctx.question, list(options), allow_nop=not forced, taken=taken
        )
        if isinstance(action, ExtendPlan):
            _offered(
                [s.title for s in action.subsections], [t for t, _ in options[action.position]], "subsection title"
            )
    except ActionError as e:
        retry, events = steps._rejection(ctx, "extend", str(e))
        record = steps._record(ctx, "extend", None, result, error=str(e))
        if retry and (run.extends < budget.max_expands or forced):
            run.attempt += 1
            run.feedback = str(e)
            return StepOutcome(run, ctx.outline, record, events)
        return StepOutcome(
            moved_to(run, "done", reason="the expand decision kept failing"), ctx.outline, record, events
        )
    if not isinstance(action, ExtendPlan):
        record = steps._record(ctx, "extend", None, result, action={"name": "nop"})
        return StepOutcome(moved_to(run, "done", reason="the model judged the report complete"), ctx.outline, record)
    return steps.expanded(ctx, run, action, result)
