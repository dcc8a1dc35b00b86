"""The research screen: the engine runs in a thread worker; its events arrive here as messages and
are handed to the panes; the person's edits and pause/resume/cancel go back to the engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from sala_report.app.errors import SalaError
from sala_report.app.export import default_filename
from sala_report.app.tui import keys
from sala_report.app.tui.outline_state import OutlineState
from sala_report.app.tui.screens.dialogs import ConfirmDialog, ExportDialog, TextDialog
from sala_report.app.tui.services import RunningEngine, RunRequest, Services
from sala_report.app.tui.widgets.activity_log import ActivityLog
from sala_report.app.tui.widgets.draft_view import DraftView
from sala_report.app.tui.widgets.outline_tree import OutlineTree
from sala_report.app.tui.widgets.sources_table import SourcesTable
from sala_report.app.tui.widgets.status_line import Status, StatusLine
from sala_report.app.warp import events
from sala_report.app.warp.citations import render_cites
from sala_report.app.wording import plural, readable_keys, search_problem

if TYPE_CHECKING:
    from sala_report.app.warp.engine import Delivered, RunResult

STEP_NAMES = {
    "search": "searching",
    "init-plan": "planning the outline",
    "write": "writing",
    "extend": "deciding what to deepen",
}


class EngineEvent(Message):
    """One engine event, posted from the engine's thread (post_message is thread-safe)."""

    def __init__(self, event: Delivered) -> None:
        super().__init__()
        self.event = event


class ResearchScreen(Screen):
    BINDINGS = keys.RESEARCH
    # Below 110 columns the sources and activity panes go under the outline and draft (app.tcss), so the
    # draft keeps a readable width on an 80-column terminal.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(
        self,
        services: Services,
        *,
        request: RunRequest | None = None,
        session_id: str | None = None,
        auto_export: str | None = None,
        answers: tuple[str, ...] | None = None,
    ) -> None:
        """`answers`: to the clarifying questions the resumed session waits on (ClarifyDialog's)."""
        super().__init__()
        if (request is None) == (session_id is None):
            raise ValueError("ResearchScreen needs either a new run's request or a session id to resume")
        self.services = services
        self.auto_export = auto_export
        self.request = request
        self.session_id = session_id
        self.answers = answers
        self.engine: RunningEngine | None = None
        self.outline = OutlineState()
        self.paused = False  # asked for; the engine says when it has stopped (Paused)
        self.running = False
        self.cancelling = False
        self.waiting = False  # the run stopped with its first outline for the person's review (--review-plan)
        self._active_s = 0.0  # time spent working (the timer stops while paused and after the end)
        self._active_since: float | None = services.clock()
        self._step_deltas = 0
        self._step_started_at = services.clock()
        self._headings: dict[int, str] = {}
        self._numbers: dict[str, int] = {}  # registry key -> the report's [n]
        self._shown: tuple[str, str] | None = None  # (heading, raw text) of the written section in the draft pane

    def compose(self) -> ComposeResult:
        facts = self.services.facts
        with Horizontal(id="panes"):
            yield OutlineTree(self.outline, id="outline")
            yield DraftView(id="draft")
            with Vertical(id="side"):
                yield SourcesTable(id="sources")
                yield ActivityLog(id="activity")
        yield StatusLine(
            Status(model=facts.model, device=facts.device, search=facts.search, max_steps=facts.max_steps), id="status"
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#outline").border_title = "Outline"
        self.query_one("#draft").border_title = "Draft"
        self.query_one("#sources").border_title = "Sources"
        self.query_one("#activity").border_title = "Activity"
        self.query_one(OutlineTree).focus()
        self.set_interval(1.0, self._tick)
        what = f"resuming session {self.session_id}" if self.request is None else f"starting: {self.request.question}"
        self.log_line(what)
        self.run_engine()

    def on_unmount(self) -> None:
        # Leaving the screen (or quitting) must not leave the engine thread running or paused forever;
        # cancelling keeps every finished step, so the session can be resumed.
        if self.engine is not None and self.running:
            self.engine.cancel()

    @property
    def elapsed(self) -> float:
        running = self.services.clock() - self._active_since if self._active_since is not None else 0.0
        return self._active_s + running

    def _set_active(self, active: bool) -> None:
        """Start or stop the timer (and the tokens-per-second figure, which means nothing while stopped)."""
        now = self.services.clock()
        if active and self._active_since is None:
            self._active_since = now
            self._step_started_at, self._step_deltas = now, 0
        elif not active and self._active_since is not None:
            self._active_s += now - self._active_since
            self._active_since = None
            self.query_one(StatusLine).change(elapsed_s=self._active_s, tokens_per_s=None)

    def _set_state(self, state: str) -> None:
        self.query_one(StatusLine).change(state=state)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pause and cancel are offered only while the run can still do them."""
        if action in ("toggle_pause", "cancel_run"):
            return self.engine is not None and self.running and not self.cancelling
        if action == "start_writing":
            return self.waiting
        return True

    def log_line(self, message: str, style: str = "") -> None:
        self.query_one(ActivityLog).entry(self.elapsed, message, style)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False, name="engine")
    def run_engine(self) -> RunResult:
        self.services.progress = lambda message: self.app.call_from_thread(self.log_line, message)
        if self.request is not None:
            engine = self.services.start(self.request)
        else:
            engine = self.services.resume(str(self.session_id), answers=self.answers)
            self.answers = None  # stored with the session now; a later resume of this screen has none to give
        engine.subscribe(lambda event: self.post_message(EngineEvent(event)))
        self.engine = engine
        return engine.run()

    @on(Worker.StateChanged)
    def worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.name not in ("engine", "export"):
            return
        error = event.worker.error
        title = error.title if isinstance(error, SalaError) else type(error).__name__
        hint = f" — {error.hint}" if isinstance(error, SalaError) and error.hint else ""
        if event.worker.name == "engine":
            self.running = False
            self._set_active(False)
            self._set_state("failed")
        self.log_line(f"{title}: {error}{hint}", "bold red")
        self.notify(f"{error}{hint}", title=title, severity="error", timeout=15)

    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if self.outline.on_event(event):
            self.query_one(OutlineTree).redraw()
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_RunStarted(self, event: events.RunStarted) -> None:
        self.session_id = event.session_id
        self.app.session_ids.append(event.session_id)
        self.running = True
        web = event.web if event.web is not None else (self.request.web if self.request is not None else None)
        status = self.query_one(StatusLine)
        if web is not None:
            status.change(search=self.services.facts.search if web else "your documents only")
        status.change(step=event.step, max_steps=event.max_steps or status.status.max_steps)
        self._set_state("running")
        if event.outline is not None:
            self._on_OutlineChanged(events.OutlineChanged(event.session_id, event.step, "resume", event.outline))
        for source in event.sources:
            self._on_SourceAdded(source)
        for source_id in getattr(self.engine, "excluded", ()):  # excluded before this run: still out
            self.query_one(SourcesTable).mark_excluded(source_id)
        self._on_ReferencesChanged(events.ReferencesChanged(event.session_id, event.step, event.references))
        self.log_line(f"session {event.session_id} {'resumed' if event.resumed else 'started'}")
        if event.finished:
            self.query_one(DraftView).show_report(self.services.report_markdown(event.session_id))

    def _on_StepStarted(self, event: events.StepStarted) -> None:
        self._step_deltas, self._step_started_at = 0, self.services.clock()
        self._shown = None
        self.query_one(StatusLine).change(step=event.step)
        self._set_state("pausing…" if self.paused else "running")
        target = self._heading(event.node_id) if event.node_id is not None else "the outline"
        retry = f" (try {event.attempt})" if event.attempt > 1 else ""
        self.query_one(DraftView).step_started(
            f"Step {event.step}: {STEP_NAMES.get(event.kind, event.kind)} — {target}{retry}", event.kind
        )
        self.log_line(f"step {event.step}: {event.kind} {target}{retry}")

    def _on_TokenDelta(self, event: events.TokenDelta) -> None:
        self._step_deltas += 1
        self.query_one(DraftView).token(event.text, event.restart)

    def _on_ActionRejected(self, event: events.ActionRejected) -> None:
        again = "; trying again" if event.will_retry else ""
        error = readable_keys(event.error, self._numbers)
        self.log_line(f"the model's {event.kind} answer was rejected: {error}{again}", "yellow")

    def _on_SearchFinished(self, event: events.SearchFinished) -> None:
        words = ", ".join(event.keywords)
        self.log_line(f"searched [{words}]: {plural(event.passages, 'passage')}")
        problem = search_problem(event.degraded) if event.degraded else None
        self.query_one(StatusLine).change(degraded=problem)
        if problem:
            self.log_line(f"search came back short: {problem}", "yellow")

    def _on_SourceAdded(self, event: events.SourceAdded) -> None:
        self.query_one(SourcesTable).add_source(event.source_id, event.title, event.location, event.kind)

    # retrieval's own events, passed through by the engine while a search fetches pages

    def _on_FetchStarted(self, event) -> None:
        self.query_one(SourcesTable).add_source(None, "", event.url, "web", state="fetching")

    def _on_SourceStored(self, event) -> None:
        self.query_one(SourcesTable).add_source(event.source_id, event.title, event.location, "web")

    def _on_SourceReused(self, event) -> None:
        self.query_one(SourcesTable).add_source(event.source_id, "", event.location, "web", state="cached")

    def _on_SourceFailed(self, event) -> None:
        self.query_one(SourcesTable).add_source(None, "", event.location, "web", state="failed")
        self.log_line(f"could not read {event.location}: {event.reason}", "yellow")

    def _on_OutlineChanged(self, event: events.OutlineChanged) -> None:
        self._headings = self.outline.names()
        if event.reason in ("init-plan", "expand"):
            self.log_line(
                f"outline {'planned' if event.reason == 'init-plan' else 'expanded'}: "
                f"{plural(len(self._headings), 'section')}"
            )
        if event.reason in ("edit", "resume"):
            self._refresh_cited_by()

    def _on_ReferencesChanged(self, event: events.ReferencesChanged) -> None:
        """One numbering everywhere, the export's: the sources pane, the section shown, the log."""
        self._numbers = {key: n for key, _, n in event.references}
        self.query_one(SourcesTable).set_numbers({source_id: n for _, source_id, n in event.references})
        if self._shown is not None:
            self.query_one(DraftView).section_written(self._shown[0], render_cites(self._shown[1], self._numbers))
        self._refresh_cited_by()

    def _refresh_cited_by(self) -> None:
        if self.session_id is not None:
            self.query_one(SourcesTable).set_cited_by(self.services.cited_by(self.session_id))

    def _on_SectionWritten(self, event: events.SectionWritten) -> None:
        heading = f"{event.position.removeprefix('section-')} {event.title}"
        self.query_one(DraftView).section_written(heading, event.markdown)
        self._shown = (heading, event.content) if event.content else None
        removed = f", {event.removed_citations} invalid removed" if event.removed_citations else ""
        self.log_line(f"wrote {heading}: {plural(event.citations, 'citation')}{removed}", "green")
        self._refresh_cited_by()

    def _on_SectionSkipped(self, event: events.SectionSkipped) -> None:
        self.log_line(f"gave up on {self._heading(event.node_id)}: {event.reason}", "red")

    def _on_CitationFlagged(self, event: events.CitationFlagged) -> None:
        cited = readable_keys(event.key, self._numbers)
        self.log_line(f"weak support for {cited} in {self._heading(event.node_id)} (score {event.score:.2f})", "yellow")

    def _on_EditApplied(self, event: events.EditApplied) -> None:
        self.log_line(f"edit applied: {event.description}", "cyan")
        source_id = getattr(event.edit, "source_id", None)  # an ExcludeSource
        if source_id is not None:
            self.query_one(SourcesTable).mark_excluded(source_id)

    def _on_EditRejected(self, event: events.EditRejected) -> None:
        self.log_line(f"edit refused: {event.reason}", "yellow")
        self.notify(event.reason, title="Edit refused", severity="warning")

    def _on_Paused(self, event: events.Paused) -> None:
        self._set_active(False)
        self._set_state("paused")
        redo = f" (step {event.redo_step} was stopped; it is done again on resume)" if event.redo_step else ""
        self.log_line(f"paused{redo}")

    def _on_Unpaused(self, event: events.Unpaused) -> None:
        self._set_active(True)
        self._set_state("pausing…" if self.paused else "running")
        self.log_line("resumed")

    def _on_Finished(self, event: events.Finished) -> None:
        self._run_ended()
        self.query_one(StatusLine).change(step=event.steps)
        if event.status == "waiting":
            self._wait_for_review(event.session_id)
            return
        self._set_state(event.status)
        self.log_line(
            f"finished ({event.status}): {event.reason}", "bold green" if event.status == "done" else "bold yellow"
        )
        if self.auto_export:
            title = self.outline.view.title if self.outline.view else None
            self.export_report(
                self.auto_export,
                self.services.reports_dir / default_filename(title, event.session_id, self.auto_export),
            )
        else:
            self.notify(f"Run {event.status}. Ctrl+E exports the report.", title="Finished")

    def _wait_for_review(self, session_id: str) -> None:
        """The first outline is stored and waits: edits are queued with the session, and S writes the report
        (the resumed run applies them first)."""
        self.waiting = True
        self.request, self.session_id = None, session_id
        self._set_state("waiting for your review")
        self.log_line("the outline waits for your review: edit it, then press s to start writing", "bold cyan")
        self.notify("Edit the outline, then press s to start writing.", title="Review the plan")

    def action_start_writing(self) -> None:
        if not self.waiting:
            return
        self.waiting = False
        self._set_active(True)
        self._set_state("starting…")
        self.log_line(f"writing session {self.session_id} from the reviewed outline")
        self.run_engine()

    def _on_Failed(self, event: events.Failed) -> None:
        self._run_ended()
        self._set_state("failed")
        hint = f" — {event.hint}" if event.hint else ""
        self.log_line(f"failed: {event.error}{hint}", "bold red")

    def _run_ended(self) -> None:
        self.running = False
        self.paused = False
        self._set_active(False)
        if self.outline.pending:
            dropped = ", ".join(p.description for p in self.outline.pending)
            self.outline.pending.clear()
            self.query_one(OutlineTree).redraw()
            self.log_line(
                f"not applied before the run ended (kept: resuming the session applies them): {dropped}", "yellow"
            )

    def _heading(self, node_id: int | None) -> str:
        return self._headings.get(node_id, f"section {node_id}") if node_id is not None else "the outline"

    def _tick(self) -> None:
        if self._active_since is None:
            return  # paused or ended: the figures stay as they were
        seconds = self.services.clock() - self._step_started_at
        rate = self._step_deltas / seconds if self._step_deltas and seconds >= 1.0 else None
        self.query_one(StatusLine).change(elapsed_s=self.elapsed, tokens_per_s=rate)

    @on(OutlineTree.TitleWanted)
    def ask_title(self, message: OutlineTree.TitleWanted) -> None:
        def answered(title: str | None) -> None:
            if title and title.strip():
                message.then(title.strip())

        self.app.push_screen(TextDialog(message.prompt, value=message.value), answered)

    @on(OutlineTree.ConfirmWanted)
    def ask_confirm(self, message: OutlineTree.ConfirmWanted) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                message.then()

        self.app.push_screen(ConfirmDialog(message.question), confirmed)

    @on(SourcesTable.ExcludeRequested)
    def exclude_source(self, message: SourcesTable.ExcludeRequested) -> None:
        """Asked first: the sections that cite the source lose their text and are written again."""
        from sala_report.app.warp.edits import ExcludeSource

        if self.engine is None or not self.running:
            why = (
                f"has ended; exclude with `sala-report sources exclude {self.session_id} N`"
                if self.session_id
                else "is still starting"
            )
            self.notify(f"The run {why}.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if not yes or self.engine is None:
                return
            try:
                self.engine.submit(ExcludeSource(message.source_id, label=message.label))
            except SalaError as e:
                self.notify(f"{e}", title=e.title, severity="error", timeout=15)
                return
            self.log_line(f"edit queued: exclude source {message.label}", "cyan")

        question = f"Exclude {message.label}? Sections citing it are written again without it."
        self.app.push_screen(ConfirmDialog(question), confirmed)

    @on(SourcesTable.NotExcludable)
    def cannot_exclude(self, message: SourcesTable.NotExcludable) -> None:
        self.notify(f"Cannot exclude: {message.reason}.", severity="warning")

    @on(OutlineTree.EditsRequested)
    def submit_edits(self, message: OutlineTree.EditsRequested) -> None:
        if self.engine is None or not (self.running or self.waiting):
            for edit in message.edits:
                self.outline.pending = [p for p in self.outline.pending if p.edit is not edit]
            self.query_one(OutlineTree).redraw()
            why = (
                "is still starting" if self.engine is None else "has ended; resume it from Sessions (Ctrl+S, r) to edit"
            )
            self.notify(f"The run {why}.", severity="warning")
            return
        for i, edit in enumerate(message.edits):
            try:
                self.engine.submit(edit)
            except SalaError as e:  # not stored (a full disk): drop it from the screen and say why
                for dropped in message.edits[i:]:
                    self.outline.pending = [p for p in self.outline.pending if p.edit is not dropped]
                self.query_one(OutlineTree).redraw()
                self.log_line(f"edit not saved: {e}", "bold red")
                self.notify(f"{e}" + (f" — {e.hint}" if e.hint else ""), title=e.title, severity="error", timeout=15)
                return
        self.log_line(f"edit queued: {message.description}", "cyan")

    def action_toggle_pause(self) -> None:
        """Pausing stops the step in flight at once; the status says "pausing…" until the engine has
        stopped (Paused), then "paused". The stopped step is done again on resume."""
        if self.engine is None or not self.running:
            return
        if self.paused:
            self.engine.resume_run()
            self.paused = False
            self._set_state("resuming…" if self._active_since is None else "running")
        else:
            self.engine.pause()
            self.paused = True
            self._set_state("pausing…")

    def action_cancel_run(self) -> None:
        if self.engine is not None and self.running:
            self.engine.cancel()
            self.cancelling = True
            self._set_state("cancelling")
            self.log_line("cancelling: the step in progress stops; every finished step is saved", "yellow")

    def action_toggle_report(self) -> None:
        draft = self.query_one(DraftView)
        if draft.mode == "report" or self.session_id is None:
            draft.show_section()
        else:
            draft.show_report(self.services.report_markdown(self.session_id))

    def action_export(self) -> None:
        if self.session_id is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        title = self.outline.view.title if self.outline.view else None
        stem = Path(default_filename(title, self.session_id, "md")).stem

        def chosen(choice: tuple[str, Path, bool] | None) -> None:
            if choice is not None:
                self.export_report(*choice)

        self.app.push_screen(ExportDialog(self.services.reports_dir, stem), chosen)

    @work(thread=True, group="export", exit_on_error=False, name="export")
    def export_report(self, fmt: str, path: Path, questions: bool = False) -> None:
        result = self.services.export(str(self.session_id), fmt, path, questions=questions)
        self.app.call_from_thread(self._exported, result)

    def _exported(self, result) -> None:
        self.app.exported.append(result.path)
        self.log_line(f"exported {result.format.upper()} to {result.path}", "green")
        for warning in result.warnings:
            self.log_line(warning, "yellow")
        self.notify(str(result.path), title=f"Exported {result.format.upper()}")

    def action_ask(self) -> None:
        if self.session_id is None:
            self.notify("Nothing to ask yet: the run has not started.", severity="warning")
            return
        from sala_report.app.tui.screens.ask import AskDialog
        from sala_report.app.warp.ask import ask_session

        session_id = str(self.session_id)
        self.app.push_screen(AskDialog(lambda question: ask_session(self.services, session_id, question)))

    def action_show_sessions(self) -> None:
        from sala_report.app.tui.screens.sessions import SessionsScreen

        self.app.push_screen(SessionsScreen(self.services))
