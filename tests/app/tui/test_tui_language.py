"""The start screen's report language, end to end in the app: "zh" over English documents gives a report whose
prose is Chinese (a Unicode script count) and whose references are the English documents, unchanged."""

from __future__ import annotations

import pytest
from test_language_report import REFERENCES, cjk_share, prose
from textual.widgets import Input
from tui_helpers import make_services, until
from warp_fakes import CORPUS

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.warp import events

pytestmark = pytest.mark.anyio


async def test_a_chinese_report_from_the_start_screen(tmp_path, corpus):
    services = make_services(tmp_path, max_expands=0)
    form = StartScreen(question="How did renewable energy grow?", docs=corpus, web=False)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#language", Input).value = "zh"
        form.query_one("#start-run").press()
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
    finished = next(e for e in services.seen if isinstance(e, events.Finished))
    report = services.report_markdown(finished.session_id)
    text = prose(report)
    assert len(text) > 200 and cjk_share(text) > 0.6, report
    assert "\n## 参考文献\n" in report  # the report's own words are in its language
    references = REFERENCES.split(report)[1]
    titles = {title for title, _ in CORPUS.values()}
    listed = [line.split("] ", 1)[1].rsplit(" — ", 1) for line in references.splitlines() if line.startswith("[")]
    assert listed and all(title in titles and cjk_share(title) == 0 for title, _ in listed)
    for source in services.store.sources():
        name = source.location.rsplit("/", 1)[1]
        assert " ".join(source.text.split()) == " ".join(f"{CORPUS[name][0]} {' '.join(CORPUS[name][1])}".split())
