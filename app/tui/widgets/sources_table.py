"""The sources pane: every source the model was shown, where it came from, and which sections cite it; `x` on
a row asks to exclude that source from the session."""

from __future__ import annotations

from urllib.parse import urlparse

from textual.binding import Binding
from textual.message import Message
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
    """State is one of: fetching, read, cached (already stored), failed (with the reason in the log), excluded
    (the person excluded it; it stays so). `#` is the source's [n] in the report (as exported); a source no
    section cites yet has none."""

    BINDINGS = [Binding("x", "exclude", "Exclude source")]

    class ExcludeRequested(Message):
        """The person asked to exclude the source on the cursor row; `label` names it as the pane shows it."""

        def __init__(self, source_id: int, label: str) -> None:
            super().__init__()
            self.source_id = source_id
            self.label = label

    class NotExcludable(Message):
        """The cursor row is not a source the model was shown (a page still fetching, or one that failed)."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

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
            self.set_state(location, state)
            if title:
                self.update_cell(location, "title", title)
            return
        excluded = source_id is not None and source_id in self._excluded()
        self.add_row(
            "", title or "(untitled)", "", "excluded" if excluded else state, site_of(location, kind), key=location
        )
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
        if location in self.rows and self.get_cell(location, "state") != "excluded":
            self.update_cell(location, "state", state)

    def mark_excluded(self, source_id: int) -> None:
        """The engine applied the exclusion: the row says so from now on (later fetch states do not undo it)."""
        self._excluded().add(source_id)
        location = self._location_of().get(source_id)
        if location is not None and location in self.rows:
            self.update_cell(location, "state", "excluded")

    def action_exclude(self) -> None:
        if not self.rows:
            return
        location = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        source_id = next((sid for sid, loc in self._location_of().items() if loc == location), None)
        if source_id is None or self.get_cell(location, "state") in ("fetching", "failed"):
            self.post_message(self.NotExcludable("that page was never read, so no section can cite it"))
            return
        if source_id in self._excluded():
            self.post_message(self.NotExcludable("that source is excluded already"))
            return
        n = self.get_cell(location, "n")
        title = self.get_cell(location, "title")
        self.post_message(self.ExcludeRequested(source_id, f"[{n}] {title}" if n else str(title)))

    def set_cited_by(self, cited_by: dict[int, list[str]]) -> None:
        """`cited_by` maps source ids to section numbers ("2.1")."""
        by_location = {location: cited_by.get(source_id, []) for source_id, location in self._location_of().items()}
        for location in list(self.rows):
            self.update_cell(location, "cited", ", ".join(by_location.get(location.value, [])))

    def _excluded(self) -> set[int]:
        if not hasattr(self, "_excluded_ids"):
            self._excluded_ids: set[int] = set()
        return self._excluded_ids

    def _numbers(self) -> dict[int, int]:
        return getattr(self, "_number_of", {})

    def _location_of(self) -> dict[int, str]:
        if not hasattr(self, "_locations"):
            self._locations: dict[int, str] = {}
        return self._locations
