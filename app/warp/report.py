"""The report contract (ARCHITECTURE.md "Contracts"): Markdown with `# Title`, numbered section headings,
[n] citations and a `## References` list of `[n] title — URL or file path`, plus a JSON-able summary.

Citations are numbered per source, by first appearance; only cited sources are listed, so every [n]
resolves and every reference is cited. Either function works on a run in progress (a partial report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp.citations import Registry, cited_keys, render_cites
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


def _body(node: Node, numbers: dict[str, int]) -> str:
    if node.content is None:
        plan = (node.plan or "not written yet").replace("*", "\\*")
        return f"*{plan}*"
    text = render_cites(node.content, numbers)
    text = _SECTION_MENTION.sub(r"section \1", text)
    # A line that starts like a heading would break the numbered structure (only possible in soft mode).
    return re.sub(r"(?m)^(\s*)#", r"\1\\#", text).strip()


def render_report(outline: Outline, registry: Registry, *, question: str = "") -> str:
    numbers, references = numbering(outline, registry)
    parts = [f"# {_inline(outline.title or question or 'Report')}"]
    for loc in walk(outline):
        parts.append(f"{'#' * (loc.depth + 1)} {loc.number} {_inline(loc.node.title)}")
        parts.append(_body(loc.node, numbers))
    if references:
        parts.append("## References")
        parts.extend(f"[{r.number}] {_inline(r.title or r.location)} — {' '.join(r.location.split())}" for r in references)
    return "\n\n".join(parts) + "\n"


def render_markdown(store, session_id: str) -> str:
    """The session's report as it stands now (unwritten sections show their plan in italics)."""
    warp = WarpStore(store)
    record = warp.session(session_id)
    if record is None:
        raise KeyError(f"no session '{session_id}'")
    return render_report(warp.outline(session_id), warp.registry(session_id), question=record.question)


def session_summary(store, session_id: str) -> dict[str, Any]:
    """Everything a front end or an export needs about a session, as plain JSON-able data."""
    warp = WarpStore(store)
    record = warp.session(session_id)
    if record is None:
        raise KeyError(f"no session '{session_id}'")
    outline, registry = warp.outline(session_id), warp.registry(session_id)
    numbers, references = numbering(outline, registry)
    stored = {s.id for s in store.sources({r.source_id for r in references}, with_text=False) if s.status == "ok"}
    checks = warp.citations(session_id)
    verified = sum(1 for _, c in checks if not c.weak and registry.get(c.key) and registry.get(c.key).source_id in stored)
    numbers_by_id = {loc.node.id: loc.number for loc in walk(outline)}
    searches, problems = warp.search_problems(session_id)
    degraded = [p for p in problems if p]

    def tree(node: Node) -> dict[str, Any]:
        return {"id": node.id, "number": numbers_by_id[node.id], "title": node.title, "plan": node.plan,
                "written": node.content is not None, "locked": node.locked, "skipped": node.skipped,
                "children": [tree(c) for c in node.children]}  # fmt: skip

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
        "sections": [{"id": loc.node.id, "number": loc.number, "level": loc.depth, "title": loc.node.title,
                      "plan": loc.node.plan, "markdown": _body(loc.node, numbers) if loc.node.content is not None else None}
                     for loc in walk(outline)],  # fmt: skip
        "sources": [{"n": r.number, "source_id": r.source_id, "title": r.title, "location": r.location, "kind": r.kind,
                     "stored": r.source_id in stored} for r in references],  # fmt: skip
        "citations": {"total": len(checks), "verified": verified, "flagged": sum(1 for _, c in checks if c.weak),
                      "removed": record.removed_citations, "passages_seen": len(registry)},  # fmt: skip
        # searches whose web results were cut short (rate limits, no network): their sections rest on fewer sources
        "searches": {"total": searches, "degraded": len(degraded), "problems": list(dict.fromkeys(degraded))},
    }
