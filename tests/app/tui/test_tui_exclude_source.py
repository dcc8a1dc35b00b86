"""`x` on the sources pane excludes the source under the cursor: asked first, applied by the real engine,
marked in the pane, and gone from the finished report."""

from __future__ import annotations

import pytest
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.dialogs import ConfirmDialog
from sala_report.app.tui.widgets.sources_table import SourcesTable
from sala_report.app.warp import WarpStore, events
from sala_report.app.warp.citations import cited_keys
from sala_report.app.warp.edits import ExcludeSource
from sala_report.app.warp.state import walk

pytestmark = pytest.mark.anyio


async def test_x_on_a_cited_source_excludes_it_from_the_session(tmp_path, request_for):
    services = make_services(tmp_path, delay_s=0.002)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.SectionWritten) >= 1, what="a written section")
        await pilot.press("p")
        await until(pilot, lambda: services.count(events.Paused) == 1, what="the pause")
        table = screen.query_one(SourcesTable)
        await until(pilot, lambda: table.row_count and table.get_cell_at((0, 0)) == "1", what="a numbered source")
        table.focus()
        table.move_cursor(row=0)
        location = table.coordinate_to_cell_key((0, 0)).row_key.value
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: services.count(events.EditApplied) == 1, what="the exclusion")
        await pilot.pause(0.1)
        applied = next(e.edit for e in services.seen if isinstance(e, events.EditApplied))
        assert isinstance(applied, ExcludeSource) and applied.label.startswith("[1] ")
        assert services.store.source(applied.source_id).location == location
        assert table.get_cell(location, "state") == "excluded"

        assert table.get_cell(location, "n") == ""  # no longer cited, so no longer numbered
        table.move_cursor(row=table.get_row_index(location))
        await pilot.press("x")  # asked again: refused with a reason, nothing queued
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ConfirmDialog)

        await pilot.press("p")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run", timeout=60)
        await pilot.pause(0.1)
        assert table.get_cell(location, "state") == "excluded"
        wstore = WarpStore(services.store)
        registry = wstore.registry(screen.session_id)
        cited = {
            registry.get(k).source_id
            for loc in walk(wstore.outline(screen.session_id))
            for k in cited_keys(loc.node.content or "")
        }
        assert cited and applied.source_id not in cited
        assert location not in services.report_markdown(screen.session_id)


async def test_an_excluded_row_stays_excluded_whatever_comes_later():
    from textual.app import App

    class PaneApp(App):
        def compose(self):
            yield SourcesTable()

    app = PaneApp()
    async with app.run_test() as pilot:
        table = app.query_one(SourcesTable)
        table.add_source(7, "Page A", "https://example.org/a", "web")
        table.mark_excluded(7)
        table.add_source(7, "Page A", "https://example.org/a", "web", state="cached")
        table.mark_excluded(8)  # not listed yet: listed as excluded once it arrives
        table.add_source(8, "Page B", "https://example.org/b", "web")
        await pilot.pause()
        assert table.get_cell("https://example.org/a", "state") == "excluded"
        assert table.get_cell("https://example.org/b", "state") == "excluded"
