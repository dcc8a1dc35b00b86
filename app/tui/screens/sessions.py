"""Past sessions: read a report again, or resume a run that stopped."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, MarkdownViewer, Static

from sala_report.app.tui.services import Services


class SessionsScreen(Screen):
    BINDINGS = [
        Binding("r", "resume", "Resume run", id="session-resume"),
        Binding("escape", "app.pop_screen", "Back", id="session-back"),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions-pane"):
            yield Static("Sessions — Enter reads the report, r resumes the run, Esc goes back", classes="dim")
            yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Id", "Status", "Steps", "Updated", "Question")
        for s in self.services.sessions():
            table.add_row(s.session_id, s.status, str(s.steps), s.updated, s.question, key=s.session_id)
        table.focus()
        if table.row_count == 0:
            self.query_one(Static).update("No sessions yet. Esc goes back; Ctrl+N starts a new research run.")

    def _selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @on(DataTable.RowSelected)
    def open_report(self) -> None:
        session_id = self._selected()
        if session_id is not None:
            self.app.push_screen(ReportScreen(self.services.report_markdown(session_id), session_id))

    def action_resume(self) -> None:
        session_id = self._selected()
        if session_id is not None:
            self.app.resume_run(session_id)


class ReportScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="report-back")]

    def __init__(self, markdown: str, session_id: str) -> None:
        super().__init__()
        self.markdown = markdown
        self.session_id = session_id

    def compose(self) -> ComposeResult:
        yield MarkdownViewer(self.markdown or "*This session has no text yet.*", show_table_of_contents=True)
        yield Footer()
