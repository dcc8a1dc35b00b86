"""The report contract (ARCHITECTURE.md "Contracts"): Markdown with `# Title`, numbered section headings,
[n] citations and a `## References` list of `[n] title — URL or file path`, plus a JSON-able summary.

Citations are numbered per source, by first appearance; only cited sources are listed, so every [n]
resolves and every reference is cited. Either function works on a run in progress (a partial report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sala_report.app.report_wording import words_for
from sala_report.app.warp.citations import (
    CITE,
    CitationCheck,
    Registry,
    cited_keys,
    cited_sentences,
    rechecked,
    render_cites,
    strip_cites,
)
from sala_report.app.warp.state import Node, Outline, walk
from sala_report.app.warp.store import WarpStore


@dataclass(frozen=True)
class Reference:
    number: int
    source_id: int
    title: str
    location: str
    kind: str


def numbering(outline: Outline, registry: Registry) -> tuple[dict[str, int], list[Reference]]:
    """(key -> reference number, references in order). Keys of one source share its number."""
    by_source: dict[int, Reference] = {}
    numbers: dict[str, int] = {}
    for loc in walk(outline):
        for key in cited_keys(loc.node.content or ""):
            entry = registry.get(key)
            if entry is None:
                continue
            ref = by_source.get(entry.source_id)
            if ref is None:
                ref = Reference(len(by_source) + 1, entry.source_id, entry.title, entry.location, entry.kind)
                by_source[entry.source_id] = ref
            numbers[key] = ref.number
    return numbers, list(by_source.values())


_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


def _inline(text: str) -> str:
    """A title on one line, with Markdown's markup characters escaped (titles come from pages and models)."""
    return _INLINE_SPECIAL.sub(r"\\\1", " ".join(text.split()))


_SECTION_MENTION = re.compile(r"\bsection-(\d+(?:\.\d+)*)\b", re.I)


WEAK_MARK = "⚑"  # after a citation whose sentence shares few words with the passage (the TUI's flag)
WEAK_NOTE = f"{WEAK_MARK} {words_for('').weak_note}"


def _body(node: Node, numbers: dict[str, int], weak: frozenset[tuple[str, str]] = frozenset()) -> str:
    if node.content is None:
        plan = (node.plan or "not written yet").replace("*", "\\*")
        return f"*{plan}*"
    text = render_cites(mark_weak(node.content, weak), numbers) if weak else render_cites(node.content, numbers)
    text = _SECTION_MENTION.sub(r"section \1", text)
    # A line that starts like a heading would break the numbered structure (only possible in soft mode).
    return re.sub(r"(?m)^(\s*)#", r"\1\\#", text).strip()


def mark_weak(content: str, weak: frozenset[tuple[str, str]]) -> str:
    """`content` with WEAK_MARK after each citation of a sentence whose support was flagged; `weak` holds
    (sentence without citations, key) pairs (CitationCheck.sentence, .key), as stored after the WRITE."""
    out = []
    for sentence, keys in _pieces(content):
        flagged = any((strip_cites(sentence).strip(), k) in weak for k in keys)
        out.append(CITE.sub(lambda m: m.group(0) + WEAK_MARK, sentence) if flagged else sentence)
    return "".join(out)


def _pieces(content: str) -> list[tuple[str, list[str]]]:
    """`content` cut into its cited sentences (as citations.cited_sentences finds them) and the text
    between them, in order; joined back they give `content`."""
    out: list[tuple[str, list[str]]] = []
    rest = content
    for sentence, keys in cited_sentences(content):
        at = rest.find(sentence)
        if at < 0:
            continue
        out += [(rest[:at], []), (sentence, keys)]
        rest = rest[at + len(sentence) :]
    return [*out, (rest, [])]


def weak_pairs(checks) -> dict[int, frozenset[tuple[str, str]]]:
    """node id -> the (sentence, key) pairs flagged weak, from WarpStore.citations."""
    out: dict[int, set[tuple[str, str]]] = {}
    for node_id, check in checks:
        if check.weak:
            out.setdefault(node_id, set()).add((check.sentence.strip(), check.key))
    return {k: frozenset(v) for k, v in out.items()}


def render_report(
    outline: Outline,
    registry: Registry,
    *,
    question: str = "",
    weak: dict[int, frozenset[tuple[str, str]]] | None = None,
    unchecked: int = 0,
    language: str = "",
) -> str:
    """`weak` (weak_pairs): citations to mark with WEAK_MARK; a note before the References says what it means,
    and another how many citations could not be checked (`unchecked`), so none reads as verified. The
    report's own words are in its `language` (report_wording.py)."""
    weak = weak or {}
    words = words_for(language)
    numbers, references = numbering(outline, registry)
    parts = [f"# {_inline(outline.title or question or 'Report')}"]
    marked = False
    for loc in walk(outline):
        parts.append(f"{'#' * (loc.depth + 1)} {loc.number} {_inline(loc.node.title)}")
        body = _body(loc.node, numbers, weak.get(loc.node.id, frozenset()))
        marked = marked or WEAK_MARK in body
        parts.append(body)
    if marked:
        parts.append(f"*{WEAK_MARK} {words.weak_note}*")
    if unchecked:
        parts.append(f"*{words.unchecked_note.format(count=unchecked)}*")
    if references:
        parts.append(f"## {words.references}")
        parts.extend(
            f"[{r.number}] {_inline(r.title or r.location)} — {' '.join(r.location.split())}" for r in references
        )
    return "\n\n".join(parts) + "\n"


def render_markdown(store, session_id: str) -> str:
    """The session's report as it stands now (unwritten sections show their plan in italics)."""
    warp = WarpStore(store)
    record = warp.session(session_id)
    if record is None:
        raise KeyError(f"no session '{session_id}'")
    outline, registry = warp.outline(session_id), warp.registry(session_id)
    checks = current_checks(warp, session_id, outline, registry)
    return render_report(
        outline,
        registry,
        question=record.question,
        weak=weak_pairs(checks),
        unchecked=sum(c.unchecked for _, c in checks),
        language=_language(record.options),
    )


def _language(options) -> str:
    """The report language of the session's brief (brief.py), "" when it has none."""
    brief = options.get("brief") if isinstance(options, dict) else None
    return str(brief.get("language") or "") if isinstance(brief, dict) else ""


def current_checks(
    warp: WarpStore, session_id: str, outline: Outline, registry: Registry
) -> list[tuple[int, CitationCheck]]:
    """The stored citation checks of what the sections cite now (a check of a key the text no longer cites,
    an excluded source's in a locked section, says nothing of it), each with its unchecked state."""
    cited_in = {loc.node.id: set(cited_keys(loc.node.content or "")) for loc in walk(outline)}
    return [
        (node_id, rechecked(c, registry))
        for node_id, c in warp.citations(session_id)
        if c.key in cited_in.get(node_id, ())
    ]


def excluded_sources(wstore: WarpStore, session_id: str) -> set[int]:
    """Every source an applied ExcludeSource named. The applied edit's event is journaled in the same
    transaction as the outline it changed, so this survives a crash exactly as the outline does."""
    return {
        int(payload["edit"]["source_id"])
        for _, _, kind, payload in wstore.events(session_id)
        if kind == "EditApplied" and payload.get("edit", {}).get("type") == "ExcludeSource"
    }


def session_summary(store, session_id: str) -> dict[str, Any]:
    """Everything a front end or an export needs about a session, as plain JSON-able data."""

    warp = WarpStore(store)
    record = warp.session(session_id)
    if record is None:
        raise KeyError(f"no session '{session_id}'")
    outline, registry = warp.outline(session_id), warp.registry(session_id)
    numbers, references = numbering(outline, registry)
    stored = {s.id for s in store.sources({r.source_id for r in references}, with_text=False) if s.status == "ok"}
    checks = current_checks(warp, session_id, outline, registry)
    verified = sum(
        1
        for _, c in checks
        if not c.weak and not c.unchecked and registry.get(c.key) and registry.get(c.key).source_id in stored
    )
    numbers_by_id = {loc.node.id: loc.number for loc in walk(outline)}
    weak = weak_pairs(checks)
    searches, problems = warp.search_problems(session_id)
    degraded = [p for p in problems if p]

    def tree(node: Node) -> dict[str, Any]:
        return {
            "id": node.id,
            "number": numbers_by_id[node.id],
            "title": node.title,
            "plan": node.plan,
            "written": node.content is not None,
            "locked": node.locked,
            "skipped": node.skipped,
            "children": [tree(c) for c in node.children],
        }

    return {
        "session_id": record.id,
        "question": record.question,
        "status": record.status,
        "title": outline.title,
        "model": record.model,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "steps": record.steps,
        "tokens": {"prompt": record.prompt_tokens, "completion": record.completion_tokens},
        "seconds": round(record.seconds, 3),
        "error": record.error,
        "outline": [tree(n) for n in outline.sections],
        "sections": [
            {
                "id": loc.node.id,
                "number": loc.number,
                "level": loc.depth,
                "title": loc.node.title,
                "plan": loc.node.plan,
                "weak_citations": len(weak.get(loc.node.id, ())),
                "unchecked_citations": sum(1 for node_id, c in checks if node_id == loc.node.id and c.unchecked),
                "markdown": _body(loc.node, numbers, weak.get(loc.node.id, frozenset()))
                if loc.node.content is not None
                else None,
            }
            for loc in walk(outline)
        ],
        "sources": [
            {
                "n": r.number,
                "source_id": r.source_id,
                "title": r.title,
                "location": r.location,
                "kind": r.kind,
                "stored": r.source_id in stored,
            }
            for r in references
        ],
        "excluded_sources": sorted(excluded_sources(warp, session_id)),  # the person's: out of the references
        "citations": {
            "total": len(checks),
            "verified": verified,
            "flagged": sum(1 for _, c in checks if c.weak),
            # in another script than their passage, with no number or name to compare: neither weak nor verified
            "unchecked": sum(1 for _, c in checks if c.unchecked),
            "removed": record.removed_citations,
            "passages_seen": len(registry),
        },
        # searches whose web results were cut short (rate limits, no network): their sections rest on fewer sources
        "searches": {"total": searches, "degraded": len(degraded), "problems": list(dict.fromkeys(degraded))},
        # written sections that fail the quality checks: the run is then not a plain "done" (exit code 3)
        "quality": {"weak_sections": weak_sections(outline, checks, numbers_by_id)},
    }


def weak_sections(outline: Outline, checks, numbers: dict[int, str]) -> list[dict[str, Any]]:
    """Each written section that fails a quality check, with why: no citation, most of the citations that
    could be checked weakly supported (unchecked ones count neither way), a title without letters."""
    by_node: dict[int, list] = {}
    for node_id, check in checks:
        by_node.setdefault(node_id, []).append(check)
    out = []
    for loc in walk(outline):
        node = loc.node
        if node.content is None:
            continue
        reasons = []
        found = [c for c in by_node.get(node.id, []) if not c.unchecked]
        if not cited_keys(node.content):
            reasons.append("no citation")
        elif found and sum(c.weak for c in found) * 2 > len(found):
            reasons.append(f"{sum(c.weak for c in found)} of {len(found)} citations weakly supported")
        if not any(c.isalpha() for c in node.title):
            reasons.append("a title without letters")
        if reasons:
            out.append({"number": numbers[node.id], "title": node.title, "reasons": reasons})
    return out
