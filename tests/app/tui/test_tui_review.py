"""Plan review in the terminal app (issue 15): a run asked to wait for review stops with its first outline,
the person edits it, and S writes the report from the edited outline (compared with the outline the
person expects, and with the final report)."""

from __future__ import annotations

import dataclasses

import pytest
from textual.widgets import Footer
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.dialogs import TextDialog
from sala_report.app.tui.widgets.outline_tree import OutlineTree
from sala_report.app.tui.widgets.status_line import StatusLine
from sala_report.app.warp import events, render_markdown
from sala_report.app.warp.brief import Brief

pytestmark = pytest.mark.anyio


def rows(tree: OutlineTree) -> list[str]:
    return [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]


async def test_the_plan_waits_is_edited_and_s_writes_it(tmp_path, request_for):
    services = make_services(tmp_path)
    request = dataclasses.replace(request_for, brief=Brief(review_plan=True))
    app = SalaApp(services, run=request)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the stop for review")
        await pilot.pause(0.1)
        finished = next(e for e in services.seen if isinstance(e, events.Finished))
        assert finished.status == "waiting"
        assert "waiting for your review" in str(screen.query_one(StatusLine).render())
        assert services.count(events.StepStarted) == 2  # a search and the outline: nothing written yet
        assert screen.check_action("start_writing", ()) is True

        tree = screen.query_one(OutlineTree)
        tree.focus()
        tree.cursor_line = next(i for i in range(tree.last_line + 1) if tree.get_node_at_line(i).data.number == "1")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), what="the title dialog")
        app.screen.query_one("#dialog-input").value = "Reviewed first section"
        await pilot.press("enter")
        assert any("pending: rename → Reviewed first section" in row for row in rows(tree)), rows(tree)

        await pilot.press("s")
        await until(pilot, lambda: services.count(events.Finished) == 2, timeout=90, what="the written report")
        await pilot.pause(0.1)
        assert [e.status for e in services.seen if isinstance(e, events.Finished)] == ["waiting", "done"]
        assert screen.check_action("start_writing", ()) is False
        assert rows(tree)[0].endswith(" 1 Reviewed first section"), rows(tree)  # applied: no longer pending
        report = render_markdown(services.store, finished.session_id)
        assert "\n## 1 Reviewed first section\n" in report
        assert app.screen.query_one(Footer) is not None
