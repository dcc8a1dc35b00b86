"""Ask a stored report a follow-up question: passages of the sources the report cites (FTS), one model call,
and an answer cited with the report's own reference numbers; stored with the session.

The model cites passage keys (`\\cite{textidN}`) as in WRITE; keys it was not shown are dropped, bare [n]
marks removed, and the rest mapped to the report's numbers, so every [n] in an answer is a reference of the
report (or, with a search, a new source numbered after them). A small in-process model chooses sentences of
the passages verbatim (evidence mode), like its WRITE steps.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

from sala_report.app.warp.actions import ActionError
from sala_report.app.warp.choice_grammar import sentences_constraint
from sala_report.app.warp.citations import (
    CITE,
    Entry,
    cited_keys,
    content_words,
    drop_marks,
    drop_unknown,
    render_cites,
)
from sala_report.app.warp.decoding import Decoding
from sala_report.app.warp.evidence import check_chosen, one_line, sentence_choices
from sala_report.app.warp.generator import GenRequest
from sala_report.app.warp.grammar import write_constraint
from sala_report.app.warp.report import Reference, excluded_sources, numbering
from sala_report.app.warp.steps import writing
from sala_report.app.warp.store import WarpStore
from sala_report.app.warp.validate import Limits

PASSAGES = 6  # passages shown to the model: about what one WRITE sees
SENTENCES = (1, 3)  # sentences an evidence-mode answer chooses: at least, at most
SENTENCE_CHOICES = 8
MAX_TOKENS = 400  # a generate-mode answer: a paragraph

SYSTEM = (
    "You answer a question about a research report using only the passages given. Cite each claim with the "
    "key of its passage, as \\cite{textidN}. Never cite anything else; if the passages do not answer the "
    "question, say so in one sentence."
)
SYSTEM_CHOOSE = "You answer a question by copying the sentences of the passages that answer it, each with its citation."

# (passages, what went wrong with the search or None): called with the question, the passage count and the
# source ids to rank from; the real one is retrieval's Retriever.gather (ask_session)
Gather = Callable[[str, int, set[int]], tuple[list, str | None]]


@dataclass(frozen=True)
class Answer:
    session_id: str
    question: str
    text: str  # with [n] citations: the report's numbers, new sources after them
    cited: list[int]
    references: list[Reference]  # the cited ones, by number
    dropped: list[str] = field(default_factory=list)  # keys not shown and bare marks removed from the model's text
    mode: str = "generate"  # "evidence" (chosen sentences) or "generate"
    seconds: float = 0.0
    seq: int = 0  # where it is stored with the session
    search_problem: str | None = None  # with a search: why it came back short (the answer used what was stored)

    def to_dict(self) -> dict:
        return {
            "session_id": self.session_id,
            "question": self.question,
            "answer": self.text,
            "cited": self.cited,
            "references": [
                {"n": r.number, "title": r.title, "location": r.location, "kind": r.kind} for r in self.references
            ],
            "dropped": self.dropped,
            "mode": self.mode,
            "seconds": round(self.seconds, 2),
            "search_problem": self.search_problem,
        }


def report_references(warp: WarpStore, session_id: str) -> list[Reference]:
    """The report's references, numbered exactly as report.render_report numbers them."""
    _, references = numbering(warp.outline(session_id), warp.registry(session_id))
    return references


def passages_for(store, question: str, references: list[Reference], k: int = PASSAGES) -> list:
    """The `k` stored chunks of the referenced sources that best match `question` (FTS); when no word of
    the question is indexed, the session's own passages that share most words with it."""
    ids = {r.source_id for r in references}
    if not ids:
        return []
    return store.passages(question, k, source_ids=ids)


def shown_entries(found: list, registry_entries: list[Entry], question: str, k: int = PASSAGES) -> list[Entry]:
    """Entries keyed textid1..: the passages found, or (none found) the closest of the report's passages."""
    if not found:
        words = content_words(question)
        ranked = sorted(registry_entries, key=lambda e: -len(content_words(e.text) & words))
        return [replace(e, key=f"textid{i}") for i, e in enumerate(ranked[:k], 1)]
    return [
        Entry(f"textid{i}", p.chunk_id, p.source_id, p.title, p.location, p.kind, p.text)
        for i, p in enumerate(found, 1)
    ]


def evidence_text(entries: list[Entry], chars: int = 1200) -> str:
    return "\n\n".join(f"[{e.key}] {one_line(e.title)}\n{e.text[:chars]}" for e in entries)


def _action(text: str, constraint) -> str:
    m = re.search(r"<action>(.*?)(?:</action>|$)", text, re.S)
    if m:
        return m.group(1).strip()
    return constraint.from_json(text).strip() if constraint is not None else text.strip()


def compose(
    generator, settings, question: str, entries: list[Entry], *, cancel: threading.Event | None = None
) -> tuple[str, str]:
    """(answer text citing `\\cite{key}` of `entries`, mode) from one model call."""
    cancel = cancel or threading.Event()
    mode = writing(SimpleNamespace(settings=settings, generator=generator))
    evidence = evidence_text(entries, settings.passage_chars)
    if mode == "evidence":
        choices = sentence_choices(entries, question=question, topic=question, limit=SENTENCE_CHOICES)
        if not choices:
            return "", mode
        offered = [c.cited for c in choices]
        high = min(SENTENCES[1], len(offered))
        constraint = sentences_constraint(offered, min(SENTENCES[0], high), high)
        tokens = sum(sorted((generator.count_tokens(t) + 2 for t in offered), reverse=True)[:high]) + 32
        prompt = f"{evidence}\n\nQuestion: {question}\n\nCopy the sentences from the evidence above that answer the question, each with its citation."
        result = generator.generate(
            GenRequest(
                SYSTEM_CHOOSE,
                prompt,
                constraint if settings.constrained else None,
                tokens,
                0.0,
                seed=0,
                decoding=Decoding(fast_forward=True),
            ),
            cancel=cancel,
        )
        text = _action(result.text, constraint)
        try:
            check_chosen(text, {e.key: e for e in entries})
        except ActionError:
            text = " ".join(offered[:high])  # a server that ignored the grammar: the closest sentences, verbatim
        return text, mode
    limits = Limits(min_chars=20, max_citations=6)
    constraint = write_constraint(limits, [e.key for e in entries]) if settings.constrained and entries else None
    prompt = f"Passages:\n{evidence}\n\nQuestion: {question}\n\nAnswer in one short paragraph, citing the passages."
    result = generator.generate(
        GenRequest(
            SYSTEM,
            prompt,
            constraint,
            MAX_TOKENS,
            settings.temperature,
            settings.top_p,
            settings.repetition_penalty,
            ("</action>",),
            seed=0,
        ),
        cancel=cancel,
    )
    return _action(result.text, constraint), mode


def cite_sources(text: str, entries: list[Entry], allowed: set[int]) -> tuple[str, list[int], list[str]]:
    """(text citing `\\cite{sourceID}`, source ids cited in order, what was dropped): bare [n] marks go (they
    would read as the report's references), and so do keys not among `entries` or of a source not `allowed`.
    Sources, not numbers, are stored: the report's numbering may change while its run goes on."""
    text, marks = drop_marks(text)
    known = {e.key: f"source{e.source_id}" for e in entries if e.source_id in allowed}
    text, unknown = drop_unknown(text, known)

    def to_sources(match: re.Match) -> str:
        keys = [k.strip() for k in match.group(1).split(",") if k.strip()]
        return "\\cite{" + ", ".join(dict.fromkeys(known[k] for k in keys)) + "}"

    text = one_line(CITE.sub(to_sources, text))
    return text, [int(k.removeprefix("source")) for k in cited_keys(text)], [*marks, *unknown]


def with_numbers(text: str, numbers: dict[int, int]) -> tuple[str, list[int]]:
    """(`text` of cite_sources with [n] for each source's number, the numbers cited); a source without a
    number loses its citation."""
    keyed = {f"source{sid}": n for sid, n in numbers.items()}
    return render_cites(text, keyed), sorted({keyed[k] for k in cited_keys(text) if k in keyed})


def numbered(references: list[Reference], cited: list[int]) -> dict[int, int]:
    """Source id -> number: the report's references as numbered, then sources only `cited` here, in order."""
    numbers = {r.source_id: r.number for r in references}
    for source_id in cited:
        numbers.setdefault(source_id, len(numbers) + 1)
    return numbers


def ask(
    store,
    session_id: str,
    question: str,
    generator,
    settings,
    *,
    gather: Gather | None = None,
    clock: Callable[[], float] = time.monotonic,
    cancel: threading.Event | None = None,
) -> Answer:
    """Answer `question` from the session's sources (and, with `gather`, what a new search finds), store it
    with the session and return it. `settings` are the WARP settings."""
    question = one_line(question)
    if not question:
        raise ValueError("expected a question, received an empty one")
    started = clock()
    warp = WarpStore(store)
    references = report_references(warp, session_id)
    allowed = {r.source_id for r in references}
    found = passages_for(store, question, references)
    problem = None
    if gather is not None:  # new sources are numbered after the report's own (numbered())
        excluded = excluded_sources(warp, session_id)  # the person took them out of this session
        gathered, problem = gather(question, PASSAGES, set(allowed))
        for p in gathered:
            if p.source_id in excluded:
                continue
            allowed.add(p.source_id)
            if all(p.chunk_id != q.chunk_id for q in found):
                found.append(p)
    registry = warp.registry(session_id)
    own = [e for e in registry.entries.values() if e.source_id in allowed]
    entries = shown_entries(found, own, question, k=PASSAGES * (2 if gather else 1))
    if not entries:
        stored, sources, dropped, mode = "The report has no sources to answer from.", [], [], "none"
    else:
        raw, mode = compose(generator, settings, question, entries, cancel=cancel)
        stored, sources, dropped = cite_sources(raw, entries, allowed)
        if not stored:
            stored = "The report's sources say nothing that answers this."
    seq = warp.add_question(session_id, question, stored, sources)
    numbers = numbered(references, sources)
    text, cited = with_numbers(stored, numbers)
    by_source = {e.source_id: e for e in entries}
    refs = {r.source_id: r for r in references}
    for source_id in sources:
        if source_id not in refs:
            e = by_source[source_id]
            refs[source_id] = Reference(numbers[source_id], source_id, e.title, e.location, e.kind)
    cited_refs = sorted((refs[s] for s in set(sources)), key=lambda r: r.number)
    return Answer(session_id, question, text, cited, cited_refs, dropped, mode, clock() - started, seq, problem)


def _plain(text: str) -> str:
    """`text` on one line with Markdown's markup characters escaped (questions and titles are anyone's)."""
    return re.sub(r"([\\`*_\[\]<>#])", r"\\\1", one_line(text))


def appendix(warp: WarpStore, session_id: str) -> str:
    """The session's questions and answers as a Markdown section ("" when none were asked), numbered as the
    report is now; sources only the answers cite (a search's) are listed after them, numbered on."""
    asked = warp.questions(session_id)
    if not asked:
        return ""
    references = report_references(warp, session_id)
    numbers = numbered(references, [s for _, _, sources in asked for s in sources])
    parts = ["## Questions and answers"]
    for i, (question, stored, _) in enumerate(asked, 1):
        answer = re.sub(r"^(\s*)#", r"\1\\#", with_numbers(stored, numbers)[0])  # never a heading
        parts += [f"**Q{i}. {_plain(question)}**", answer]
    listed = {r.source_id for r in references}
    extra = [(n, sid) for sid, n in numbers.items() if sid not in listed]
    if extra:
        parts.append("Sources cited only in these answers:")
        for n, sid in sorted(extra):
            source = warp.store.source(sid)
            title, location = (source.title, source.location) if source is not None else ("(removed)", "")
            parts.append(f"[{n}] {_plain(title)} — {location}")
    return "\n\n".join(parts)


def ask_session(services, session_id: str, question: str, *, search: bool = False) -> Answer:
    """`ask` with a run service's parts (app/runs.py's LocalServices: store, settings, generator, retriever):
    the session's own model when the backend is unchanged, and with `search` the web through its retriever."""
    from sala_report.app.errors import UsageError

    warp = WarpStore(services.store)
    found = warp.find_session(session_id)
    if found is None:
        raise UsageError(
            f"no session '{session_id}' (or the prefix matches several)", hint="`sala-report sessions` lists them."
        )
    if not one_line(question):
        raise UsageError("the question is empty", hint='Ask something: sala-report ask ID "what about costs?"')
    record = warp.session(found)
    settings = services.settings
    same_backend = record.options.get("backend") == settings.model.backend
    generator = services.generator(record.options.get("model_source", "") if same_backend else "")
    gather = None
    if search:
        retriever = services.retriever(True)

        def gather(text: str, k: int, source_ids: set[int]) -> tuple[list, str | None]:
            found = retriever.gather([text], k, source_ids=source_ids)
            return list(found.passages), found.degraded

    return ask(services.store, found, question, generator, settings.warp, gather=gather)
