"""The start screen's outline field (issue 15 item 3): the person's Markdown outline is what the run writes, with
no planning step, and it is stored with the session."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.warp import WarpStore, events

pytestmark = pytest.mark.anyio


async def test_the_persons_outline_file_is_the_reports_outline(tmp_path, corpus):
    outline = tmp_path / "outline.md"
    outline.write_text("# My energy report\n\n## Costs\nWhat solar costs.\n\n## Storage\n", encoding="utf-8")
    services = make_services(tmp_path, max_expands=0)
    form = StartScreen(question="How did renewable energy grow?", docs=corpus, web=False)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#outline", Input).value = f"  {outline}  "
        form.query_one("#start-run").press()
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
    finished = next(e for e in services.seen if isinstance(e, events.Finished))
    stored = WarpStore(services.store).outline(finished.session_id)
    assert stored.title == "My energy report" and [s.title for s in stored.sections] == ["Costs", "Storage"]
    assert stored.sections[0].plan == "What solar costs." and all(s.content for s in stored.sections)
    assert "init-plan" not in services.generator().kinds()
    markdown = services.report_markdown(finished.session_id)
    assert markdown.startswith("# My energy report\n") and "## 1 Costs" in markdown and "## 2 Storage" in markdown
