"""The sources pane follows a page from fetching to read, cached or failed, and shows who cites it."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from sala_report.app.tui.widgets.sources_table import SourcesTable, site_of


class PaneApp(App):
    def compose(self) -> ComposeResult:
        yield SourcesTable()


@pytest.mark.anyio
async def test_fetch_states_and_cited_by():
    app = PaneApp()
    async with app.run_test() as pilot:
        table = app.query_one(SourcesTable)
        table.add_source(None, "", "https://example.org/a", "web", state="fetching")
        table.add_source(None, "", "https://example.org/broken", "web", state="fetching")
        await pilot.pause()
        assert table.get_cell("https://example.org/a", "state") == "fetching"
        table.add_source(7, "Page A", "https://example.org/a", "web")
        table.add_source(None, "", "https://example.org/broken", "web", state="failed")
        table.add_source(9, "", "/docs/notes.md", "file", state="cached")
        table.set_cited_by({7: ["1", "2.1"], 9: ["3"], 42: ["4"]})
        await pilot.pause()
        assert table.row_count == 3
        assert table.get_cell("https://example.org/a", "title") == "Page A"
        assert table.get_cell("https://example.org/a", "state") == "read"
        assert table.get_cell("https://example.org/a", "cited") == "1, 2.1"
        assert table.get_cell("https://example.org/broken", "state") == "failed"
        assert table.get_cell("/docs/notes.md", "cited") == "3"


def test_site_of():
    assert site_of("https://www.example.org/x?y", "web") == "example.org"
    assert site_of("/home/me/docs/report.pdf", "file") == "report.pdf"
