"""A session's excluded sources: which they are (from the journal), the retrieval filter that keeps them out,
and excluding one from a stored session that no process is running (the CLI's `sources exclude`)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sala_report.app.errors import UsageError
from sala_report.app.warp import events as ev
from sala_report.app.warp.citations import Registry
from sala_report.app.warp.edits import Edit, EditError, ExcludeSource, apply_edit, describe, source_keys, to_dict
from sala_report.app.warp.phases import Budget, RunState, moved_to, reconcile
from sala_report.app.warp.report import numbering
from sala_report.app.warp.state import walk
from sala_report.app.warp.store import Commit, WarpStore

if TYPE_CHECKING:
    from sala_report.app.warp.retriever import Retriever
    from sala_report.retrieval.types import GatherResult


def note(excluded: set[int], edit: Edit) -> None:
    """Add the source of an applied ExcludeSource to `excluded` (shared with the running ExcludingRetriever)."""
    if isinstance(edit, ExcludeSource):
        excluded.add(edit.source_id)


def after_exclusion(run: RunState, edit: Edit, registry: Registry) -> RunState:
    """The pending step without the excluded source's passages: a write whose evidence was only that source
    searches again instead of writing from nothing."""
    if not isinstance(edit, ExcludeSource):
        return run
    keys = source_keys(registry, {edit.source_id})
    evidence = [k for k in run.evidence if k not in keys]
    if evidence == run.evidence:
        return run
    if run.phase == "write" and not evidence:
        return moved_to(run, "search", target=run.target)
    return dataclasses.replace(run, evidence=evidence)


class ExcludingRetriever:
    """A Retriever that never returns passages of `excluded` (a set the engine adds to as edits apply)."""

    def __init__(self, inner: Retriever, excluded: set[int]) -> None:
        self.inner = inner
        self.excluded = excluded

    def gather(
        self,
        queries: list[str],
        k: int,
        *,
        source_ids: set[int] | None = None,
        on_event: Callable[[object], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GatherResult:
        if not self.excluded:
            return self.inner.gather(queries, k, source_ids=source_ids, on_event=on_event, cancel=cancel)
        pool = None if source_ids is None else source_ids - self.excluded
        # Over the whole store the excluded source can still rank high: ask for more, then drop its passages.
        result = self.inner.gather(queries, 2 * k, source_ids=pool, on_event=on_event, cancel=cancel)
        kept = [p for p in result.passages if p.source_id not in self.excluded][:k]
        return dataclasses.replace(result, passages=kept)


@dataclass(frozen=True)
class Excluded:
    """What `exclude_stored` did: the source, as the report named it, and how many sections wait for a rewrite."""

    source_id: int
    label: str
    rewrite_sections: int

    def describe(self) -> str:
        if self.rewrite_sections:
            return (
                f"excluded {self.label}; {self.rewrite_sections} section(s) that cited it are written again on `resume`"
            )
        return f"excluded {self.label}; its citations were removed"


def exclude_stored(wstore: WarpStore, session_id: str, number: int, *, rewrite: bool, budget: Budget) -> Excluded:
    """Exclude the source cited as [`number`] in a stored session's report.
    Refused while another process runs the session: it would not see the edit (exclude it from its TUI)."""
    record = wstore.session(session_id)
    if record is None:
        raise UsageError(f"no session '{session_id}'", hint="`sala-report sessions` lists them.")
    if record.running_elsewhere:
        raise UsageError(
            f"session {session_id} is being written by another process ({record.owner})",
            hint="Exclude the source from that run's sources pane (x), or after it stops.",
        )
    outline, registry = wstore.outline(session_id), wstore.registry(session_id)
    _, references = numbering(outline, registry)
    ref = next((r for r in references if r.number == number), None)
    if ref is None:
        cited = f"1 to {len(references)}" if references else "none yet"
        raise UsageError(f"the report has no reference [{number}]; its references are {cited}")
    edit = ExcludeSource(ref.source_id, rewrite=rewrite, label=f"[{number}] {ref.title or ref.location}")
    seq = wstore.queue_edit(session_id, to_dict(edit))  # queued first, like the engine: a crash loses nothing
    try:
        new = apply_edit(outline, edit, max_depth=budget.max_depth, registry=registry)
    except EditError as e:
        rejected = ev.EditRejected(session_id, record.steps, edit, str(e))
        wstore.journal(session_id, record.steps, [ev.to_record(rejected)], done_edit=seq)
        raise UsageError(str(e)) from e
    run = wstore.checkpoint(session_id)
    run = after_exclusion(reconcile(run, new, budget), edit, registry)
    keys = source_keys(registry, {ref.source_id})
    checks: dict[int, list] = {}
    for node_id, check in wstore.citations(session_id):
        checks.setdefault(node_id, []).append(check)
    written = {loc.node.id for loc in walk(new) if loc.node.content is not None}
    citations = {n: [c for c in cs if c.key not in keys] for n, cs in checks.items() if n in written}
    rewritten = sum(1 for loc in walk(outline) if loc.node.content is not None) - len(written)
    events = [
        ev.EditApplied(session_id, run.step, edit, describe(edit)),
        ev.OutlineChanged(session_id, run.step, "edit", ev.outline_view(new)),
    ]
    wstore.commit(
        session_id,
        Commit(
            run=run,
            outline=new,
            citations=citations,
            events=[ev.to_record(e) for e in events],
            done_edit=seq,
            status="partial" if rewritten and record.status == "done" else None,  # no longer every section written
        ),
    )
    return Excluded(ref.source_id, edit.label, rewritten)
