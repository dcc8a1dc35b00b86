"""The sources pane: every source the model was shown, where it came from, and which sections cite it."""

from __future__ import annotations

from urllib.parse import urlparse

from textual.widgets import DataTable

COLUMNS = (
    ("#", "n", 3),
    ("Title", "title", 22),
    ("Cited by", "cited", 8),
    ("State", "state", 5),
    ("Site or file", "where", 24),
)


def site_of(location: str, kind: str) -> str:
    """`example.org` for a web page, the file name for a document."""
    if kind == "web" or location.startswith(("http://", "https://")):
        return urlparse(location).netloc.removeprefix("www.") or location
    return location.replace("\\", "/").rsplit("/", 1)[-1]


class SourcesTable(DataTable):
    """State is one of: fetching, read, cached (already stored), failed (with the reason in the log).
    `#` is the source's [n] in the report (as exported); a source no section cites yet has none."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for label, key, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def add_source(self, source_id: int | None, title: str, location: str, kind: str, state: str = "read") -> None:
        """Add or update the row of `location` (rows are keyed by location: a page is listed while it is
        still being fetched, before it has a source id)."""
        if source_id is not None:
            self._location_of()[source_id] = location
        if location in self.rows:
            self.update_cell(location, "state", state)
            if title:
                self.update_cell(location, "title", title)
            return
        self.add_row("", title or "(untitled)", "", state, site_of(location, kind), key=location)
        if self._numbers().get(source_id) is not None:
            self.set_numbers(self._numbers())

    def set_numbers(self, numbers: dict[int, int]) -> None:
        """`numbers` maps source ids to their [n]; cited sources are listed first, in that order."""
        self._number_of = dict(numbers)
        sources = {location: source_id for source_id, location in self._location_of().items()}
        for location in list(self.rows):
            n = numbers.get(sources.get(location.value, -1))
            self.update_cell(location, "n", "" if n is None else str(n))
        self.sort("n", key=lambda n: int(n) if n else len(self.rows) + 10**6)

    def set_state(self, location: str, state: str) -> None:
        if location in self.rows:
            self.update_cell(location, "state", state)

    def set_cited_by(self, cited_by: dict[int, list[str]]) -> None:
        """`cited_by` maps source ids to section numbers ("2.1")."""
        by_location = {location: cited_by.get(source_id, []) for source_id, location in self._location_of().items()}
        for location in list(self.rows):
            self.update_cell(location, "cited", ", ".join(by_location.get(location.value, [])))

    def _numbers(self) -> dict[int, int]:
        return getattr(self, "_number_of", {})

    def _location_of(self) -> dict[int, str]:
        if not hasattr(self, "_locations"):
            self._locations: dict[int, str] = {}
        return self._locations
