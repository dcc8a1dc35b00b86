"""The Ask dialog through the app with Pilot: on a finished real run (real store, real engine), ctrl+k opens
it, a question gets an answer cited with the report's own numbers, and it is stored with the session."""

from __future__ import annotations

import re

import pytest
from textual.widgets import Input, Static
from tui_helpers import RecordingServices, make_services, until
from warp_fakes import ScriptedGenerator

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.ask import AskDialog
from sala_report.app.warp import WarpStore, events
from sala_report.app.warp.ask import appendix
from sala_report.app.warp.generator import GenResult

pytestmark = pytest.mark.anyio


class RunThenAnswer(ScriptedGenerator):
    """The scripted run; an ask prompt is answered citing the first and last passages shown."""

    def generate(self, request, *, on_delta=None, cancel=None, on_restart=None) -> GenResult:
        if "\nQuestion: " not in request.prompt or "Answer in one short paragraph" not in request.prompt:
            return super().generate(request, on_delta=on_delta, cancel=cancel, on_restart=on_restart)
        keys = re.findall(r"^\[(textid\d+)\]", request.prompt, re.M)
        text = f"<thought>-</thought><action>Costs fell \\cite{{{keys[0]}}}. Also [9] \\cite{{{keys[-1]}}}.</action>"
        return GenResult(text, "stop", 10, 10, 0.01)


async def test_ask_dialog_answers_with_the_reports_numbers(tmp_path, request_for):
    base = make_services(tmp_path)
    services = RecordingServices(base.settings, generator=RunThenAnswer(), clock=lambda: 1000.0)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 44)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, AskDialog), what="the ask dialog")
        app.screen.query_one("#ask-input", Input).value = "What happened to battery costs?"
        await pilot.press("enter")
        shown = app.screen.query_one("#ask-answer", Static)
        await until(pilot, lambda: "Costs fell" in str(shown.render()), what="the answer")
        text = str(shown.render())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="the dialog to close")
        markdown = services.report_markdown(screen.session_id)
        stored = WarpStore(services.store).questions(screen.session_id)
        exported = appendix(WarpStore(services.store), screen.session_id)
    _, _, refs = markdown.partition("\n## References\n")
    listed = {n for n in re.findall(r"(?m)^\[(\d+)\] ", refs)}
    answer, _, lines = text.partition("\n\n")
    cited = re.findall(r"\[(\d+)\]", answer)
    assert cited and set(cited) <= listed and "[9]" not in answer  # the bare mark is gone
    assert set(re.findall(r"(?m)^\[(\d+)\] ", lines)) == set(cited)
    assert [q for q, _, _ in stored] == ["What happened to battery costs?"] and answer in exported


async def test_ask_while_the_run_goes_on(tmp_path, request_for):
    base = make_services(tmp_path)
    generator = RunThenAnswer(delay_s=0.01)
    services = RecordingServices(base.settings, generator=generator, clock=lambda: 1000.0)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 44)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.SectionWritten) >= 1, what="a first written section")
        await pilot.press("p")  # paused mid-run: the run cannot end before the answer comes
        await until(pilot, lambda: services.count(events.Paused) == 1, what="the pause")
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, AskDialog), what="the ask dialog")
        app.screen.query_one("#ask-input", Input).value = "What happened to battery costs?"
        await pilot.press("enter")
        shown = app.screen.query_one("#ask-answer", Static)
        await until(pilot, lambda: "Costs fell" in str(shown.render()), what="the answer")
        assert services.count(events.Finished) == 0  # asked and answered mid-run
        answer = str(shown.render()).partition("\n\n")[0]
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="the dialog to close")
        await pilot.press("p")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        markdown = services.report_markdown(screen.session_id)
    _, _, refs = markdown.partition("\n## References\n")
    assert set(re.findall(r"\[(\d+)\]", answer)) <= set(re.findall(r"(?m)^\[(\d+)\] ", refs))
