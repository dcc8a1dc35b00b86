"""A session that stopped waiting for answers to its clarifying questions (`run --clarify --headless`, exit 5),
resumed from the terminal app's sessions list or by `resume ID` at a terminal: the stored questions come up in
the dialog first, and the run goes on with the answers typed there, as `resume ID --answers FILE` does."""

from __future__ import annotations

import pytest
from test_clarify import ASKED
from test_tui_clarify import QUESTION, services_for, stored_brief
from textual.widgets import DataTable, Input
from tui_helpers import until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.clarify import ClarifyDialog
from sala_report.app.tui.screens.research import ResearchScreen
from sala_report.app.tui.screens.sessions import SessionsScreen
from sala_report.app.tui.services import RunRequest
from sala_report.app.warp import events
from sala_report.app.warp.brief import Brief

pytestmark = pytest.mark.anyio


def waiting_session(services, corpus) -> str:
    """A run with --clarify, headless: it asks, stores the questions and stops, waiting for the answers."""
    result = services.start(RunRequest(QUESTION, web=False, docs=corpus, brief=Brief(clarify=True))).run()
    assert result.status == "waiting"
    assert services.waiting_questions(result.session_id) == tuple(ASKED)
    return result.session_id


def clarifications(services) -> list[str]:
    """The prompts of every model call after the clarify call."""
    return [r.prompt for kind, r in services.generator().requests if kind != "clarify"]


async def answer_in_dialog(app, pilot) -> None:
    await until(pilot, lambda: isinstance(app.screen, ClarifyDialog), what="the stored questions")
    await pilot.pause()
    dialog = app.screen
    assert [str(label.render()) for label in dialog.query("Label")][1:3] == [f"1. {ASKED[0]}", f"2. {ASKED[1]}"]
    await pilot.press(*"Germany", "enter")
    assert dialog.query_one("#answer-2", Input).has_focus
    await pilot.press(*"Since 2015")
    await pilot.click("#submit")


async def test_resuming_from_the_sessions_list_asks_the_stored_questions_and_goes_on_with_the_answers(tmp_path, corpus):
    services = services_for(tmp_path)
    session_id = waiting_session(services, corpus)
    asked_before = services.generator().kinds().count("clarify")
    app = SalaApp(services)
    async with app.run_test(size=(120, 50)) as pilot:
        app.action_show_sessions()
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="the sessions list")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.get_row(session_id)[1] == "waiting"
        await pilot.press("r")
        await answer_in_dialog(app, pilot)
        await until(pilot, lambda: services.count(events.Finished) == 2, what="the resumed run")
        assert isinstance(app.screen, ResearchScreen)
        finished = [e for e in services.seen if isinstance(e, events.Finished)][-1]
        assert (finished.session_id, finished.status) == (session_id, "done")
    brief = stored_brief(services, session_id)
    assert brief.questions == tuple(ASKED) and brief.answers == ("Germany", "Since 2015")
    block = f"<clarifications>\nQ: {ASKED[0]}\nA: Germany\nQ: {ASKED[1]}\nA: Since 2015\n</clarifications>"
    later = clarifications(services)
    assert later and all(block in prompt for prompt in later)
    assert services.generator().kinds().count("clarify") == asked_before  # the stored questions, not asked again


async def test_resume_at_a_terminal_asks_first_and_skip_goes_on_without(tmp_path, corpus):
    services = services_for(tmp_path)
    session_id = waiting_session(services, corpus)
    app = SalaApp(services, resume=session_id)  # `sala-report resume ID` at a terminal
    async with app.run_test(size=(120, 50)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ClarifyDialog), what="the stored questions")
        assert services.count(events.RunStarted) == 1  # nothing resumed while the person reads the questions
        await pilot.pause()
        await pilot.click("#skip")
        await until(pilot, lambda: services.count(events.Finished) == 2, what="the resumed run")
        assert [e for e in services.seen if isinstance(e, events.Finished)][-1].status == "done"
    assert stored_brief(services, session_id).answers == ("", "")
    assert clarifications(services) and not any("<clarifications>" in p for p in clarifications(services))


async def test_a_session_not_waiting_resumes_without_a_dialog(tmp_path, corpus):
    services = services_for(tmp_path)
    done = services.start(RunRequest(QUESTION, web=False, docs=corpus)).run()
    assert services.waiting_questions(done.session_id) == () and services.waiting_questions("nosuch") == ()
