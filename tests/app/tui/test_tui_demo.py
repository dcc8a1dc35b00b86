"""`sala-report demo` without a terminal: the shipped corpus, the demo questions, progress lines, exports."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tui_helpers import make_services, until

from sala_report.app import demo
from sala_report.app.tui.app import SalaApp
from sala_report.app.warp import events


def test_demo_questions_and_corpus_ship_with_the_package():
    asked = demo.questions()
    assert len(asked) >= 3 and all(q.endswith("?") for q in asked)
    names = {p.name for p in demo.corpus_folder().iterdir()}
    assert len(names) >= 6 and any(".zh." in n for n in names) and any(".ja." in n for n in names)


def test_demo_plan_turns_the_web_off_and_picks_the_default_model(tmp_path):
    services = make_services(tmp_path)
    plan = demo.plan(services.settings, "2", None)
    assert plan.request.question == demo.questions()[1]
    assert plan.request.web is False and plan.request.docs == demo.corpus_folder()
    assert plan.settings.search.web is False and plan.settings.model.source == "smollm2-135m"
    assert demo.plan(services.settings, "Why do heat pumps need defrosting?", None).request.question.startswith("Why")


def test_headless_demo_runs_on_the_shipped_corpus_and_exports(tmp_path):
    services = make_services(tmp_path)
    plan = demo.plan(services.settings, None, "scripted")
    out = io.StringIO()
    result, written = demo.run_headless(services, plan.request, out=out, formats=("md",))
    assert result.status in ("done", "partial")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("session ") and any(line.startswith("outline (init-plan): 1 ") for line in lines)
    assert lines[-1].startswith("finished (")
    report = written[0].read_text(encoding="utf-8")
    assert report.startswith("# ") and "## References" in report and "assets/demo/corpus/" in report


@pytest.mark.anyio
async def test_quitting_the_demo_says_where_the_report_is(tmp_path):
    """The demo exports a PDF when the run ends; after the app quits, `farewell()` is what the CLI prints."""
    services = make_services(tmp_path)
    plan = demo.plan(services.settings, None, "scripted")
    app = SalaApp(services, run=plan.request, auto_export="pdf")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        await until(pilot, lambda: app.exported, what="the PDF")
        await pilot.press("ctrl+q")
    (line,) = app.farewell()
    path = Path(line.removeprefix("report: "))
    assert (
        line.startswith("report: ") and path.suffix == ".pdf" and path.is_file() and path.parent == services.reports_dir
    )


@pytest.mark.anyio
async def test_quitting_before_an_export_says_how_to_get_the_report(tmp_path, request_for):
    services = make_services(tmp_path)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        session_id = app.screen.session_id
        await pilot.press("ctrl+q")
    assert app.farewell() == [
        f"session {session_id} is saved; `sala-report export {session_id}` writes its report, "
        f"`sala-report resume {session_id}` continues it"
    ]
