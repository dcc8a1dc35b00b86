"""The start screen's report fields (issue 15): what the person sets there reaches the engine, is stored
with the session, and is in the prompts the model receives; a bad outline file is one notification."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox, Input, Select
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.warp import WarpStore, events
from sala_report.app.warp.brief import Brief

pytestmark = pytest.mark.anyio
QUESTION = "How did renewable energy grow?"


async def test_the_report_fields_reach_the_engine_and_the_session(tmp_path, corpus):
    services = make_services(tmp_path)
    form = StartScreen(question=QUESTION, docs=corpus, web=False)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#length", Select).value = "long"
        form.query_one("#language", Input).value = "zh"
        form.query_one("#instructions", Input).value = "For city councillors."
        form.query_one("#review-plan", Checkbox).value = True
        form.query_one("#start-run").press()
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the run to stop for review")
        finished = next(e for e in services.seen if isinstance(e, events.Finished))
        assert finished.status == "waiting"
        record = WarpStore(services.store).session(finished.session_id)
        assert Brief.from_options(record.options) == Brief("long", "zh", "For city councillors.", True)
        plan = [r.prompt for k, r in services.generator().requests if k == "init-plan"]
        assert (
            plan
            and "Write in Chinese" in plan[0]
            and "<instructions>\nFor city councillors.\n</instructions>" in plan[0]
        )


async def test_a_bad_outline_file_is_one_notification_and_nothing_starts(tmp_path, corpus):
    services = make_services(tmp_path)
    form = StartScreen(question=QUESTION, docs=corpus, web=False)
    app = SalaApp(services, start_form=form)
    bad = tmp_path / "outline.md"
    bad.write_text("no headings at all\n", encoding="utf-8")
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#outline", Input).value = str(bad)
        form.query_one("#start-run").press()
        await pilot.pause(0.2)
        assert app.screen is form and services.seen == []
        messages = [n.message for n in app._notifications]
        assert any("cannot be used: expected Markdown headings" in m for m in messages)
