"""One function per WARP phase. Each makes one model call (plus, for SEARCH, one retrieval) and returns
what changed; the engine writes that in one transaction and only then tells subscribers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from sala_report.app.errors import ConfigError
from sala_report.app.settings import WarpSettings
from sala_report.app.warp import events as ev
from sala_report.app.warp.actions import ActionError, ExtendPlan, InitPlan, WriteAction, parse_response
from sala_report.app.warp.brief import Brief
from sala_report.app.warp.citations import CitationCheck, Entry, Registry, check_support, citation_count, render_cites
from sala_report.app.warp.decoding import Decoding
from sala_report.app.warp.generator import Generator, GenRequest, GenResult
from sala_report.app.warp.grammar import (
    OPEN,
    STRICT,
    Constraint,
    extend_constraint,
    init_plan_constraint,
    search_constraint,
    topic_list_chars,
    write_constraint,
)
from sala_report.app.warp.phases import Budget, RunState, moved_to, next_to_write
from sala_report.app.warp.prompts import (
    STYLES,
    Prompt,
    auto_style,
    fit,
    instruction_text,
    neutralize,
    released,
    render,
    template,
    user_style,
)
from sala_report.app.warp.retriever import Retriever
from sala_report.app.warp.state import Located, Node, Outline, deepen_requests, expandable, find, walk
from sala_report.app.warp.store import StepRecord
from sala_report.app.warp.validate import Limits, validate_extend, validate_init_plan, validate_search, validate_write

RETRY_TEMPERATURE = 0.8
AGENTCPM_THOUGHT_CHARS = 6000  # about its whole 2,048-token answer budget


class Cancelled(Exception):
    """The person cancelled mid-step; nothing of the step is kept."""


class EvidenceSteps(Protocol):
    """The evidence-mode steps (evidence_steps.py, which builds on this module): handed in by the engine
    so that this module never imports the one that imports it."""

    def choose_keywords(self, ctx: StepContext) -> StepOutcome: ...

    def choose_outline(self, ctx: StepContext) -> StepOutcome | None: ...

    def choose_sentences(self, ctx: StepContext, loc: Located) -> StepOutcome: ...

    def choose_subsections(self, ctx: StepContext, positions: list[str], forced: list[str]) -> StepOutcome: ...


@dataclass
class StepContext:
    session_id: str
    question: str
    step: int  # this step's number
    run: RunState  # the checkpoint before this step
    outline: Outline  # a copy the step may change
    registry: Registry  # a copy the step may add to
    limits: Limits
    budget: Budget
    settings: WarpSettings
    generator: Generator
    retriever: Retriever
    source_pool: set[int] | None  # sources passages may come from (None: the whole store)
    context_tokens: int
    cancel: threading.Event
    on_delta: Callable[[str], None]
    on_restart: Callable[[], None]
    on_retrieval_event: Callable[[object], None]
    evidence: EvidenceSteps | None = None  # evidence mode's steps; None: this run never uses evidence mode
    brief: Brief = field(default_factory=Brief)  # the person's report instructions (brief.py)


@dataclass
class StepOutcome:
    run: RunState
    outline: Outline
    record: StepRecord | None
    events: list = field(default_factory=list)
    new_entries: list[Entry] = field(default_factory=list)
    drafts: list[tuple[int, str]] = field(default_factory=list)
    citations: dict[int, list[CitationCheck]] = field(default_factory=dict)
    removed_citations: int = 0
    status: str | None = None
    error: str | None = None


def brief_values(ctx: StepContext) -> dict[str, str]:
    """The person's instructions, report language and answers to the clarifying questions (clarify.py) for the
    templates, neutralised like evidence: they are the person's words, but pasted text must not be able to
    close our tags or fake a citation key."""
    return {
        "instructions": neutralize(ctx.brief.instructions),
        "language": " ".join(neutralize(ctx.brief.language_name).split()),
        "clarified": clarified_text(ctx.brief),
    }


def clarified_text(brief: Brief) -> str:
    """`Q: …` / `A: …` lines for each question the person answered, each on one line."""
    return "\n".join(
        f"Q: {' '.join(neutralize(q).split())}\nA: {' '.join(neutralize(a).split())}" for q, a in brief.clarified
    )


def label(loc: Located | None) -> str:
    if loc is None:
        return "the outline of the whole report"
    return f'{loc.position} "{loc.node.title}" (plan: {loc.node.plan or "none given"})'


def prompt_style(ctx: StepContext) -> str:
    """ "full" or "compact" (prompts.py): "auto" picks compact for generators that say they are small
    (LocalGenerator.small_model); those that do not say (HTTP servers) get the full prompts."""
    s = ctx.settings
    if s.no_repeat_ngram < 0 or s.no_repeat_ngram in (1, 2):
        raise ConfigError(
            f"warp.no_repeat_ngram is {s.no_repeat_ngram}",
            hint="Use 0 (off) or 3 and more: shorter runs repeat in normal prose.",
        )
    if s.prompt_dir:
        return user_style(s.prompt_dir)
    if s.prompt_style == "auto":
        return auto_style(ctx.generator)
    if s.prompt_style not in STYLES:
        raise ConfigError(f"warp.prompt_style is '{s.prompt_style}'", hint=f"Use auto, {', '.join(STYLES)}.")
    return s.prompt_style


def writing(ctx: StepContext) -> str:
    """ "evidence" or "generate" (warp.writing): "auto" is evidence for in-process models under 1B
    parameters (LocalGenerator.small_model) when warp.prompt_style is "auto" too."""
    s = ctx.settings
    if s.writing == "auto":
        return "evidence" if s.prompt_style == "auto" and getattr(ctx.generator, "small_model", False) else "generate"
    if s.writing not in ("evidence", "generate"):
        raise ConfigError(f"warp.writing is '{s.writing}'", hint="Use auto, evidence or generate.")
    return s.writing


def evidence_steps(ctx: StepContext) -> EvidenceSteps:
    assert ctx.evidence is not None, "the engine hands evidence_steps to every step"
    return ctx.evidence


def step_limits(ctx: StepContext, style: str, kind: str) -> Limits:
    """With compact prompts a small model gets no room to think: it would only copy text into its thought,
    which its action then repeats. Before an outline its thought is the list of topics (grammar.py)."""
    if released(style):  # AgentCPM-Report reasons at length before it acts (the released validator sets no cap)
        return replace(ctx.limits, thought_chars=max(ctx.limits.thought_chars, AGENTCPM_THOUGHT_CHARS))
    if style != "compact":
        return ctx.limits
    return replace(ctx.limits, thought_chars=topic_list_chars(ctx.limits) if kind == "init-plan" else 1)


def _ask(
    ctx: StepContext,
    build,
    constraint_for: Callable[[Prompt], Constraint],
    *,
    entries: list[Entry] = (),
    keep_full: frozenset[int] = frozenset(),
    closers: Callable[[Prompt], tuple[str, ...]] = lambda p: (),
    json_chars: int = 0,
    limits: Limits | None = None,
    style: str = "full",
    values: tuple[str, ...] = (),
    prose: bool = False,
    echo_topics: bool = False,
) -> tuple[Prompt, GenResult]:
    """One model call. `json_chars` is the longest JSON action the grammar allows: when `max_tokens` is
    smaller than a third of it (plus the thought), the limit is raised, so JSON is not cut off unfinished.
    With compact prompts, the answer may not copy the prompt's wording (other than `values` and the
    question), and a `prose` answer may not repeat itself."""
    s = ctx.settings
    thought_chars = (limits or ctx.limits).thought_chars
    max_tokens = min(max(s.max_tokens, (thought_chars + json_chars) // 3), ctx.context_tokens // 2)
    prompt = fit(
        build,
        ctx.outline,
        list(entries),
        count=ctx.generator.count_tokens,
        budget=ctx.context_tokens - max_tokens,
        passage_chars=s.passage_chars,
        keep_full=keep_full,
        style=style,
    )
    # A retry at temperature 0 would repeat the rejected answer; sample instead.
    temperature = s.temperature if ctx.run.attempt == 1 else max(s.temperature, RETRY_TEMPERATURE)
    compact = style == "compact"
    blocking = compact and s.no_repeat_ngram > 0
    request = GenRequest(
        prompt.system,
        prompt.user,
        constraint_for(prompt) if s.constrained else None,
        max_tokens,
        temperature,
        s.top_p,
        s.repetition_penalty,
        closers(prompt),
        seed=ctx.step,
        decoding=Decoding(
            no_repeat_ngram=s.no_repeat_ngram if blocking else 0,
            avoid=tuple(instruction_text(prompt, list(values))) if blocking else (),
            repeats="prose" if prose else "fields",
            close_early=compact and prose,
            echo_topics=compact and echo_topics,
        ),
    )
    result = ctx.generator.generate(request, on_delta=ctx.on_delta, cancel=ctx.cancel, on_restart=ctx.on_restart)
    if result.finish_reason == "cancelled" or ctx.cancel.is_set():
        raise Cancelled()
    return prompt, result


def _record(
    ctx: StepContext,
    kind: str,
    node_id: int | None,
    result: GenResult | None,
    *,
    error: str | None = None,
    action: dict | None = None,
) -> StepRecord:
    return StepRecord(
        ctx.step,
        kind,
        node_id,
        ctx.run.attempt,
        error is None,
        error,
        result.text if result else "",
        action,
        result.prompt_tokens if result else 0,
        result.completion_tokens if result else 0,
        result.seconds if result else 0.0,
    )


def _stepped(run: RunState, step: int) -> RunState:
    return RunState(**{**run.to_dict(), "step": step})


def _rejection(ctx: StepContext, kind: str, error: str) -> tuple[bool, list]:
    """(whether another try is allowed, the event)."""
    retry = ctx.run.attempt <= ctx.settings.max_retries
    return retry, [ev.ActionRejected(ctx.session_id, ctx.step, kind, error, ctx.run.attempt, retry)]


def _retry(ctx: StepContext, error: str) -> RunState:
    run = _stepped(ctx.run, ctx.step)
    run.attempt += 1
    run.feedback = error
    return run


def search_step(ctx: StepContext) -> StepOutcome:
    if writing(ctx) == "evidence":
        return evidence_steps(ctx).choose_keywords(ctx)
    loc = find(ctx.outline, ctx.run.target) if ctx.run.target is not None else None
    style = prompt_style(ctx)
    limits = step_limits(ctx, style, "search")
    title, plan = (loc.node.title, loc.node.plan) if loc is not None else ("", "")

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            template("search.jinja", style),
            question=ctx.question,
            draft=draft,
            target=label(loc),
            title=title,
            plan=plan,
            max_keywords=limits.max_keywords,
            feedback=ctx.run.feedback,
            **brief_values(ctx),
        )

    json_chars = limits.max_keywords * (limits.keyword_chars + 4) + 40
    _, result = _ask(
        ctx,
        build,
        lambda p: search_constraint(limits),
        json_chars=json_chars,
        limits=limits,
        style=style,
        values=(ctx.question, title, plan),
    )
    events: list = []
    try:
        keywords = list(validate_search(parse_response(result.text).action, limits).keywords)
        error = None
    except ActionError as e:
        error = str(e)
        retry, events = _rejection(ctx, "search", error)
        if retry:
            return StepOutcome(
                _retry(ctx, error), ctx.outline, _record(ctx, "search", ctx.run.target, result, error=error), events
            )
        keywords = [loc.node.title if loc else ctx.question]  # give up on the model's queries, not on the step
    return gather_step(ctx, loc, keywords, result, error, events)


def gather_step(
    ctx: StepContext,
    loc: Located | None,
    keywords: list[str],
    result: GenResult | None,
    error: str | None,
    events: list,
) -> StepOutcome:
    """The retrieval half of SEARCH, for the `keywords` chosen."""
    k = ctx.settings.passages_for_plan if loc is None else ctx.settings.passages_per_search
    gathered = ctx.retriever.gather(
        keywords, k, source_ids=_pool(ctx), on_event=ctx.on_retrieval_event, cancel=ctx.cancel
    )
    passages = list(gathered.passages)
    if not passages:  # broaden once: the section's title and the question itself
        broad = [q for q in ([loc.node.title] if loc else []) + [ctx.question] if q not in keywords]
        if broad:
            passages = list(ctx.retriever.gather(broad, k, source_ids=_pool(ctx), cancel=ctx.cancel).passages)
    if ctx.cancel.is_set():
        raise Cancelled()
    known_sources = ctx.registry.source_ids()
    keys, new_entries = [], []
    for p in passages[:k]:
        entry, new = ctx.registry.add(p.chunk_id, p.source_id, p.title, p.location, p.kind, p.text)
        keys.append(entry.key)
        if new:
            new_entries.append(entry)
    for entry in new_entries:
        if entry.source_id not in known_sources:
            known_sources.add(entry.source_id)
            events.append(
                ev.SourceAdded(ctx.session_id, ctx.step, entry.source_id, entry.title, entry.location, entry.kind)
            )
    events.append(
        ev.SearchFinished(ctx.session_id, ctx.step, ctx.run.target, tuple(keywords), len(keys), gathered.degraded)
    )
    run = moved_to(_stepped(ctx.run, ctx.step), "init-plan" if loc is None else "write", target=ctx.run.target)
    run.evidence = list(dict.fromkeys(keys))
    run.searched = list(dict.fromkeys([*run.searched, *keywords]))
    record = _record(
        ctx, "search", ctx.run.target, result, error=error, action={"name": "search", "keywords": keywords}
    )
    return StepOutcome(run, ctx.outline, record, events, new_entries)


def _pool(ctx: StepContext) -> set[int] | None:
    if ctx.source_pool is None:
        return None
    return set(ctx.source_pool) | ctx.registry.source_ids()


def init_plan_step(ctx: StepContext) -> StepOutcome:
    if writing(ctx) == "evidence":
        outcome = evidence_steps(ctx).choose_outline(ctx)
        if outcome is not None:  # None: too few headings in the evidence to choose from
            return outcome
    style = prompt_style(ctx)
    limits = step_limits(ctx, style, "init-plan")
    entries = [e for e in (ctx.registry.get(k) for k in ctx.run.evidence) if e is not None]

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            template("init_plan.jinja", style),
            question=ctx.question,
            evidence=evidence,
            min_sections=limits.min_sections,
            max_sections=limits.max_sections,
            feedback=ctx.run.feedback,
            **brief_values(ctx),
        )

    json_chars = limits.title_chars + limits.max_sections * (limits.title_chars + limits.plan_chars + 30) + 60
    _, result = _ask(
        ctx,
        build,
        lambda p: init_plan_constraint(limits, compact=style == "compact"),
        entries=entries,
        json_chars=json_chars,
        limits=limits,
        style=style,
        echo_topics=True,
    )
    try:
        plan = validate_init_plan(
            parse_response(result.text).action, limits, ctx.question, language=ctx.brief.language_name
        )
    except ActionError as e:
        retry, events = _rejection(ctx, "init-plan", str(e))
        record = _record(ctx, "init-plan", None, result, error=str(e))
        if retry:
            return StepOutcome(_retry(ctx, str(e)), ctx.outline, record, events)
        run = moved_to(_stepped(ctx.run, ctx.step), "done", reason="the model gave no valid outline")
        return StepOutcome(
            run,
            ctx.outline,
            record,
            events,
            status="failed",
            error=f"no valid outline after {ctx.run.attempt} tries: {e}",
        )
    return planned(ctx, plan, result)


def planned(ctx: StepContext, plan: InitPlan, result: GenResult) -> StepOutcome:
    """An INIT-PLAN that passed validation: the outline and the first section to write."""
    outline = ctx.outline
    outline.title = plan.title
    outline.sections = [outline.new_node(s.title, s.plan) for s in plan.sections]
    events = [ev.OutlineChanged(ctx.session_id, ctx.step, "init-plan", ev.outline_view(outline))]
    action = {
        "name": "init-plan",
        "title": plan.title,
        "sections": [{"title": s.title, "plan": s.plan} for s in plan.sections],
    }
    run = next_to_write(_stepped(ctx.run, ctx.step), outline, ctx.budget)
    return StepOutcome(run, outline, _record(ctx, "init-plan", None, result, action=action), events)


def write_step(ctx: StepContext) -> StepOutcome:
    loc = find(ctx.outline, ctx.run.target)
    assert loc is not None, "reconcile() keeps the write target in the outline"
    if writing(ctx) == "evidence":
        return evidence_steps(ctx).choose_sentences(ctx, loc)
    style = prompt_style(ctx)
    limits = step_limits(ctx, style, "write")
    entries = [e for e in (ctx.registry.get(k) for k in ctx.run.evidence) if e is not None]
    keep = frozenset(n.id for n in _neighbours(ctx.outline, loc))

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            template("write.jinja", style),
            question=ctx.question,
            draft=draft,
            target=label(loc),
            title=loc.node.title,
            plan=loc.node.plan,
            evidence=evidence,
            keys=[e.key for e in shown],
            max_citations=limits.max_citations,
            feedback=ctx.run.feedback,
            **brief_values(ctx),
        )

    grammar = OPEN if released(style) else STRICT
    prompt, result = _ask(
        ctx,
        build,
        lambda p: write_constraint(limits, [e.key for e in p.evidence], style=grammar),
        entries=entries,
        keep_full=keep,
        closers=_write_closers,
        limits=limits,
        style=style,
        values=(ctx.question, loc.node.title, loc.node.plan),
        prose=True,
    )
    try:
        # Only the passages this prompt showed may be cited: a key from an earlier step names a passage
        # the model did not read here (a served or unconstrained model can still write one).
        action = validate_write(
            parse_response(result.text).action,
            limits,
            ctx.question,
            {e.key for e in prompt.evidence},
            require_citation=bool(prompt.evidence),
            language=ctx.brief.language_name,
        )
    except ActionError as e:
        retry, events = _rejection(ctx, "write", str(e))
        record = _record(ctx, "write", loc.node.id, result, error=str(e))
        if retry:
            return StepOutcome(_retry(ctx, str(e)), ctx.outline, record, events)
        return skip_section(ctx, loc, record, events)
    return written(ctx, loc, action, result)


def skip_section(
    ctx: StepContext, loc: Located, record: StepRecord | None, events: list, *, reason: str = ""
) -> StepOutcome:
    loc.node.skipped = True
    reason = reason or f"no valid text after {ctx.run.attempt} tries"
    events = [
        *events,
        ev.SectionSkipped(ctx.session_id, ctx.step, loc.node.id, reason),
        ev.OutlineChanged(ctx.session_id, ctx.step, "skip", ev.outline_view(ctx.outline)),
    ]
    return StepOutcome(next_to_write(_stepped(ctx.run, ctx.step), ctx.outline, ctx.budget), ctx.outline, record, events)


def written(ctx: StepContext, loc: Located, action: WriteAction, result: GenResult) -> StepOutcome:
    """A WRITE that passed validation: the section's text, its citation checks and events."""
    node = loc.node
    node.content = action.content
    checks = check_support(action.content, ctx.registry, ctx.settings.support_threshold)
    numbers = {key: entry.number for key, entry in ctx.registry.entries.items()}
    events = [
        ev.SectionWritten(
            ctx.session_id,
            ctx.step,
            node.id,
            loc.position,
            node.title,
            render_cites(action.content, numbers),
            citation_count(action.content),
            len(action.removed),
        )
    ]
    events += [
        ev.CitationFlagged(ctx.session_id, ctx.step, node.id, c.key, c.sentence, c.score) for c in checks if c.weak
    ]
    record = _record(ctx, "write", node.id, result, action={"name": "write", "removed": list(action.removed)})
    run = next_to_write(_stepped(ctx.run, ctx.step), ctx.outline, ctx.budget)
    return StepOutcome(
        run,
        ctx.outline,
        record,
        events,
        drafts=[(node.id, action.content)],
        citations={node.id: checks},
        removed_citations=len(action.removed),
    )


def _write_closers(prompt: Prompt) -> tuple[str, ...]:
    """How a WRITE may be ended at the token limit: close now, or first cite the best passage."""
    cite = (f" \\cite{{{prompt.evidence[0].key}}}.</action>",) if prompt.evidence else ()
    return ("</action>", *cite)


def _neighbours(outline: Outline, loc: Located) -> list[Node]:
    """The parent (whose text the section continues) and the previous sibling stay unabbreviated."""
    out = [loc.parent] if loc.parent is not None else []
    siblings = loc.parent.children if loc.parent is not None else outline.sections
    if loc.index > 0:
        out.append(siblings[loc.index - 1])
    return out


def extend_step(ctx: StepContext) -> StepOutcome:
    limits, budget = ctx.limits, ctx.budget
    forced = [loc.position for loc in deepen_requests(ctx.outline, budget.max_depth)]
    positions = forced or [loc.position for loc in expandable(ctx.outline, budget.max_depth)]
    if not positions:
        run = moved_to(_stepped(ctx.run, ctx.step - 1), "done", reason="no section can be expanded further")
        return StepOutcome(run, ctx.outline, None)

    if writing(ctx) == "evidence":
        return evidence_steps(ctx).choose_subsections(ctx, positions, forced)
    style = prompt_style(ctx)
    limits = step_limits(ctx, style, "extend")
    sections = [(loc.position, loc.node.title) for loc in walk(ctx.outline)]

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            template("extend_plan.jinja", style),
            question=ctx.question,
            draft=draft,
            sections=sections,
            positions=positions,
            forced=forced,
            min_subsections=limits.min_subsections,
            max_subsections=limits.max_subsections,
            feedback=ctx.run.feedback,
            **brief_values(ctx),
        )

    json_chars = limits.max_subsections * (limits.title_chars + limits.plan_chars + 30) + 80
    _, result = _ask(
        ctx,
        build,
        lambda p: extend_constraint(limits, positions, allow_nop=not forced, compact=style == "compact"),
        json_chars=json_chars,
        limits=limits,
        style=style,
        values=(ctx.question, *(title for _, title in sections)),
    )
    run = _stepped(ctx.run, ctx.step)
    run.extends += 1
    try:
        action = validate_extend(
            parse_response(result.text).action,
            limits,
            ctx.question,
            positions,
            allow_nop=not forced,
            taken=[title for _, title in sections],
            language=ctx.brief.language_name,
        )
    except ActionError as e:
        retry, events = _rejection(ctx, "extend", str(e))
        record = _record(ctx, "extend", None, result, error=str(e))
        if (retry and run.extends < budget.max_expands) or (retry and forced):
            run.attempt += 1
            run.feedback = str(e)
            return StepOutcome(run, ctx.outline, record, events)
        return StepOutcome(
            moved_to(run, "done", reason="the expand decision kept failing"), ctx.outline, record, events
        )
    if not isinstance(action, ExtendPlan):
        record = _record(ctx, "extend", None, result, action={"name": "nop"})
        return StepOutcome(moved_to(run, "done", reason="the model judged the report complete"), ctx.outline, record)
    return expanded(ctx, run, action, result)


def expanded(ctx: StepContext, run: RunState, action: ExtendPlan, result: GenResult) -> StepOutcome:
    """An EXPAND that passed validation: the new subsections and the first of them to write."""
    target = next(loc for loc in walk(ctx.outline) if loc.position == action.position)
    target.node.children = [ctx.outline.new_node(s.title, s.plan) for s in action.subsections]
    target.node.deepen = False
    events = [ev.OutlineChanged(ctx.session_id, ctx.step, "expand", ev.outline_view(ctx.outline))]
    record = _record(
        ctx,
        "extend",
        target.node.id,
        result,
        action={
            "name": "extend-plan",
            "position": action.position,
            "subsections": [{"title": s.title, "plan": s.plan} for s in action.subsections],
        },
    )
    return StepOutcome(next_to_write(run, ctx.outline, ctx.budget), ctx.outline, record, events)


STEPS = {"search": search_step, "init-plan": init_plan_step, "write": write_step, "extend": extend_step}
