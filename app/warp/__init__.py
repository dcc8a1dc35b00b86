"""WARP, the research engine: drafting and deepening a report with a live outline (warp.md §1.2).

Headless: the CLI and the TUI are front ends. The whole API a front end needs:

    engine = Engine.start(store, generator, retriever, settings.warp, question, docs_source_ids=ids)
    engine = Engine.resume(store, session_id, generator, retriever, settings.warp)
    unsubscribe = engine.subscribe(callback)  # callback(event) runs on the engine's thread
    result = engine.run()                     # blocking: call it on a worker thread; returns RunResult

    # from any thread, while run() works:
    engine.submit(edits.RenameSection(node_id, title="..."))   # applied between steps, journaled
    engine.pause(); engine.resume_run(); engine.cancel()       # both abandon the step in flight (redone on resume)

    render_markdown(store, session_id) -> str     # the report now (partial while running)
    session_summary(store, session_id) -> dict    # JSON-able: question, status, outline, sections,
                                                  # sources, citations {total, verified, flagged, removed}
    list_sessions(store) -> list[SessionRecord]

Events (`events.*`, frozen dataclasses): RunStarted, StepStarted, TokenDelta, ActionRejected,
SearchFinished, SourceAdded, OutlineChanged (with an OutlineView), SectionWritten, SectionSkipped,
CitationFlagged, EditApplied, EditRejected, Paused, Unpaused, ReferencesChanged (the export's [n] numbers),
Checkpointed, Finished, Failed. What a step or an edit causes is journaled and delivered only after it is
committed; RunStarted (with a resumed session's outline, sources and budget), Paused, Unpaused,
ReferencesChanged and TokenDelta are not journaled. Retrieval's
own progress events (sala_report.retrieval: SearchDone, FetchStarted, SourceStored, ...) are passed
through to subscribers as they happen, unjournaled.

Edits (`edits.*`, naming nodes by the stable `id` that events carry): AddSection, RenameSection,
DeleteSection, MoveSection, LockSection (never written, rewritten or expanded), DeepenSection
(expanded at the next decision), RewriteSection (searched and written again). An edit that cannot
apply yields EditRejected and changes nothing. An edit is stored when it is submitted, so one not yet
applied when the process dies is applied by the resumed run; applied ones are in the checkpoint.

Generators (`generator.Generator` protocol): LocalGenerator (model/, in-process, grammar through the
logits hook) and openai_http.OpenAIGenerator (vLLM / SGLang).
"""

from sala_report.app.warp import edits, events
from sala_report.app.warp.engine import Engine, RunResult
from sala_report.app.warp.generator import Generator, GenRequest, GenResult, LocalGenerator
from sala_report.app.warp.report import render_markdown, session_summary
from sala_report.app.warp.store import SessionRecord, WarpStore


def list_sessions(store) -> list[SessionRecord]:
    """Every session in the store, newest first."""
    return WarpStore(store).sessions()


__all__ = [
    "Engine",
    "GenRequest",
    "GenResult",
    "Generator",
    "LocalGenerator",
    "RunResult",
    "SessionRecord",
    "edits",
    "events",
    "list_sessions",
    "render_markdown",
    "session_summary",
]
