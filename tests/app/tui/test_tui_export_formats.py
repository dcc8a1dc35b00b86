"""The export dialog's Word and bibliography formats, through the app with Pilot, on a finished real run."""

from __future__ import annotations

import re
from pathlib import Path

import bibtexparser
import docx
import pytest
import rispy
from textual.widgets import RadioButton
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.dialogs import ExportDialog
from sala_report.app.warp import events

pytestmark = pytest.mark.anyio


async def test_docx_bib_and_ris_from_the_export_dialog(tmp_path, request_for):
    services = make_services(tmp_path)
    app = SalaApp(services, run=request_for)
    written: dict[str, Path] = {}
    async with app.run_test(size=(120, 44)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        for fmt in ("docx", "bib", "ris"):
            await pilot.press("ctrl+e")
            await until(pilot, lambda: isinstance(app.screen, ExportDialog), what="the export dialog")
            button = next(b for b in app.screen.query(RadioButton) if b.name == fmt)
            button.value = True
            await pilot.pause()
            path = Path(app.screen.query_one("#export-path").value)
            assert path.suffix == f".{fmt}"
            await pilot.click("#export")
            await until(
                pilot,
                lambda path=path: path.exists() and not isinstance(app.screen, ExportDialog),
                what=f"the exported {fmt}",
            )
            written[fmt] = path
        markdown = services.report_markdown(screen.session_id)
    listed = re.findall(r"(?m)^\[(\d+)\] ", markdown.partition("## References")[2])
    assert listed
    document = docx.Document(str(written["docx"]))
    assert document.paragraphs[0].style.name == "Title"
    assert "References" in [p.text for p in document.paragraphs if p.style.name == "Heading 1"]
    library = bibtexparser.parse_string(written["bib"].read_text(encoding="utf-8"))
    assert not library.failed_blocks and len(library.entries) == len(listed)
    assert all(e.entry_type == "misc" and e["note"] == "Local document" for e in library.entries)  # the corpus is files
    assert len(rispy.loads(written["ris"].read_text(encoding="utf-8"))) == len(listed)
