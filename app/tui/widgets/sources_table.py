"""The sources pane: every source the model was shown, where it came from, and which sections cite it."""

from __future__ import annotations

from urllib.parse import urlparse

from textual.widgets import DataTable

COLUMNS = (("#", "n", 3), ("Title", "title", 22), ("Cited by", "cited", 8), ("State", "state", 5), ("Site or file", "where", 24))


def site_of(location: str, kind: str) -> str:
    """`example.org` for a web page, the file name for a document."""
    if kind == "web" or location.startswith(("http://", "https://")):
        return urlparse(location).netloc.removeprefix("www.") or location
    return location.replace("\\", "/").rsplit("/", 1)[-1]


class SourcesTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for label, key, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def add_source(self, source_id: int, title: str, location: str, kind: str, state: str = "read") -> None:
        key = str(source_id)
        if key in self.rows:
            self.update_cell(key, "state", state)
            return
        self.add_row(str(self.row_count + 1), title or "(untitled)", "", state, site_of(location, kind), key=key)

    def set_cited_by(self, cited_by: dict[int, list[str]]) -> None:
        """`cited_by` maps source ids to section numbers ("2.1")."""
        for source_id, sections in cited_by.items():
            if str(source_id) in self.rows:
                self.update_cell(str(source_id), "cited", ", ".join(sections))
