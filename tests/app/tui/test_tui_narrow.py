"""An 80×24 terminal: the draft keeps a readable width (sources and activity move under it) and the help
shows every key, description and id whole."""

from __future__ import annotations

import html

import pytest
from textual.containers import VerticalScroll
from tui_helpers import make_services, until

from sala_report.app.tui import keys
from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.help import HelpScreen
from sala_report.app.warp import events

pytestmark = pytest.mark.anyio


def screen_text(app) -> str:
    """The characters on the screen, from Textual's own SVG export (one <text> run per styled segment)."""
    svg = app.export_screenshot()
    return html.unescape(svg).replace("\u00a0", " ")


async def test_at_80_by_24_the_draft_stays_readable_and_the_help_is_whole(tmp_path, request_for):
    services = make_services(tmp_path)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        screen = app.screen
        assert screen.query_one("#draft").content_region.width >= 40
        assert screen.query_one("#sources").content_region.width >= 30  # still shown, under the draft
        assert screen.query_one("#activity").content_region.height >= 5
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
        await pilot.pause(0.2)
        dialog = app.screen.query_one(VerticalScroll)
        text = ""
        for y in range(0, int(dialog.max_scroll_y) + 10, 10):  # 24 rows show part of it: scroll through
            dialog.scroll_to(y=y, animate=False)
            await pilot.pause(0.05)
            text += screen_text(app)
        for _, group in keys.GROUPS:
            for binding in group:
                assert binding.id in text and binding.description in text, (binding.id, binding.description)
