"""The export dialog's "with the questions asked" box, as `export --with-questions` (issue 15): after a question
asked with ctrl+k on a finished real run, the written Markdown and Word files carry the questions and answers
as an appendix before the references; left unticked, the file is the report alone."""

from __future__ import annotations

from pathlib import Path

import docx
import pytest
from test_tui_ask import RunThenAnswer
from textual.widgets import Checkbox, Input, RadioButton
from tui_helpers import RecordingServices, make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.ask import AskDialog
from sala_report.app.tui.screens.dialogs import ExportDialog
from sala_report.app.warp import WarpStore, events

pytestmark = pytest.mark.anyio
QUESTION = "What happened to battery costs?"


async def export(pilot, app, fmt: str, path: Path, *, questions: bool) -> None:
    await pilot.press("ctrl+e")
    await until(pilot, lambda: isinstance(app.screen, ExportDialog), what="the export dialog")
    next(b for b in app.screen.query(RadioButton) if b.name == fmt).value = True
    await pilot.pause()
    app.screen.query_one("#export-path", Input).value = str(path)
    app.screen.query_one("#with-questions", Checkbox).value = questions
    await pilot.click("#export")
    await until(pilot, lambda: path.exists() and not isinstance(app.screen, ExportDialog), what=f"the {fmt} file")


async def test_the_questions_asked_go_into_the_export_when_ticked(tmp_path, request_for):
    base = make_services(tmp_path)
    services = RecordingServices(base.settings, generator=RunThenAnswer(), clock=lambda: 1000.0)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 44)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, AskDialog), what="the ask dialog")
        app.screen.query_one("#ask-input", Input).value = QUESTION
        await pilot.press("enter")
        stored = WarpStore(services.store)
        await until(pilot, lambda: stored.questions(screen.session_id), what="the answer stored")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="the dialog to close")
        await export(pilot, app, "md", tmp_path / "with.md", questions=True)
        await export(pilot, app, "md", tmp_path / "without.md", questions=False)
        await export(pilot, app, "docx", tmp_path / "with.docx", questions=True)
    with_questions = (tmp_path / "with.md").read_text(encoding="utf-8")
    body, _, references = with_questions.partition("\n## References\n")
    assert "\n## Questions and answers\n" in body and f"**Q1. {QUESTION}**" in body and "Costs fell [" in body
    assert references.strip()  # the answers' numbers still resolve to the list below
    without = (tmp_path / "without.md").read_text(encoding="utf-8")
    assert "Questions and answers" not in without and QUESTION not in without
    assert without.partition("\n## References\n")[2] == references
    headings = [p.text for p in docx.Document(str(tmp_path / "with.docx")).paragraphs if p.style.name == "Heading 1"]
    assert headings.index("Questions and answers") < headings.index("References")
