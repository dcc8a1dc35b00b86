"""Clarifying questions in the terminal app (issue 15): with the start screen's box ticked, the model's questions
come up in a dialog before the run starts; what the person types there is stored with the session and reaches
the prompts the model receives; Skip starts the run without answers."""

from __future__ import annotations

import dataclasses

import pytest
from test_clarify import ASKED, Clarifying
from textual.widgets import Checkbox, Input
from tui_helpers import RecordingServices, until
from warp_fakes import settings as warp_settings

from sala_report.app.settings import load_settings
from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.clarify import ClarifyDialog
from sala_report.app.tui.screens.research import ResearchScreen
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.warp import WarpStore, events
from sala_report.app.warp.brief import Brief

pytestmark = pytest.mark.anyio
QUESTION = "How did renewable energy grow?"


def services_for(tmp_path) -> RecordingServices:
    """The real services (store, engine) with the scripted generator that also answers the clarify call."""
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings(max_expands=0)
    settings.model.device = "cpu"
    return RecordingServices(settings, generator=Clarifying(), clock=lambda: 1000.0)


def stored_brief(services, session_id: str) -> Brief:
    return Brief.from_options(WarpStore(services.store).session(session_id).options)


async def test_typed_answers_reach_the_session_and_the_prompts(tmp_path, corpus):
    services = services_for(tmp_path)
    form = StartScreen(question=QUESTION, docs=corpus, web=False)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#clarify", Checkbox).value = True
        form.query_one("#start-run").press()
        await until(pilot, lambda: isinstance(app.screen, ClarifyDialog), what="the questions")
        await pilot.pause()
        dialog = app.screen
        assert [str(label.render()) for label in dialog.query("Label")][1:3] == [f"1. {ASKED[0]}", f"2. {ASKED[1]}"]
        assert services.seen == []  # nothing started while the person reads the questions
        await pilot.press(*"Germany", "enter")  # Enter moves on to the next answer
        assert dialog.query_one("#answer-2", Input).has_focus
        await pilot.press(*"Since 2015")
        await pilot.click("#submit")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the run")
        assert isinstance(app.screen, ResearchScreen)
        finished = next(e for e in services.seen if isinstance(e, events.Finished))
        assert finished.status == "done"
        brief = stored_brief(services, finished.session_id)
        assert brief.questions == tuple(ASKED) and brief.answers == ("Germany", "Since 2015")
        block = f"<clarifications>\nQ: {ASKED[0]}\nA: Germany\nQ: {ASKED[1]}\nA: Since 2015\n</clarifications>"
        later = [r.prompt for kind, r in services.generator().requests if kind != "clarify"]
        assert later and all(block in prompt for prompt in later)
        assert services.generator().kinds().count("clarify") == 1  # asked once: the engine does not ask again


async def test_skip_starts_the_run_without_answers(tmp_path, corpus):
    services = services_for(tmp_path)
    brief = Brief(clarify=True)
    app = SalaApp(services, run=dataclasses.replace(_request(corpus), brief=brief))  # `run --clarify` at a terminal
    async with app.run_test(size=(120, 50)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ClarifyDialog), what="the questions")
        await pilot.pause()
        await pilot.click("#skip")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the run")
        finished = next(e for e in services.seen if isinstance(e, events.Finished))
        assert finished.status == "done"
        assert stored_brief(services, finished.session_id).answers == ("", "")
        later = [r.prompt for kind, r in services.generator().requests if kind != "clarify"]
        assert later and not any("<clarifications>" in prompt for prompt in later)


def _request(corpus):
    from sala_report.app.tui.services import RunRequest

    return RunRequest(QUESTION, web=False, docs=corpus)
