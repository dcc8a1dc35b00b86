"""Snapshots of the main screens (pytest-textual-snapshot). Deterministic: a scripted generator, a fixed
clock, fixed session ids and timestamps. After a deliberate change of look, review the report and run
`pytest tests/app/tui --snapshot-update`."""

from __future__ import annotations

import pytest
from tui_helpers import make_services, until

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.tui.services import RunRequest
from sala_report.app.warp import events
from sala_report.app.warp import store as warp_store

SIZE = (120, 36)


@pytest.fixture(autouse=True)
def fixed_ids_and_times(monkeypatch):
    """Session ids and timestamps are random and wall-clock: pin them so screenshots repeat."""
    monkeypatch.setattr(warp_store.secrets, "token_hex", lambda n: "5e55101d")
    monkeypatch.setattr(warp_store, "utc_now", lambda: "2026-01-15T09:30:00+00:00")


def finished_run(services):
    async def run_before(pilot) -> None:
        await until(pilot, lambda: services.count(events.Finished) == 1, timeout=60, what="the end of the run")
        await until(pilot, lambda: pilot.app.screen.query_one("#status").status.state != "running", what="the status")
        await pilot.pause(0.4)  # the draft pane redraws a few times a second
        pilot.app.clear_notifications()
        await pilot.pause()

    return run_before


def test_start_screen(snap_compare, tmp_path):
    """The start screen: question, sources (web, folder, both) and model."""
    services = make_services(tmp_path)
    form = StartScreen(question="How well do heat pumps work in cold climates?", model="smollm2-135m")
    assert snap_compare(SalaApp(services, start_form=form), terminal_size=SIZE)


def test_research_screen_after_a_run(snap_compare, tmp_path, corpus):
    """Outline with states, the last step's output, sources, activity and the status line."""
    services = make_services(tmp_path)
    app = SalaApp(services, run=RunRequest("How did renewable energy grow?", web=False, docs=corpus))
    assert snap_compare(app, terminal_size=SIZE, run_before=finished_run(services))


def test_help_screen_lists_every_binding(snap_compare, tmp_path):
    """F1 shows every key, with the person's keymap applied (pause moved to ctrl+space here)."""
    services = make_services(tmp_path)
    app = SalaApp(services, keymap={"pause": "ctrl+space"}, start_form=StartScreen(question="q"))
    assert snap_compare(app, press=["f1"], terminal_size=(120, 44))


def test_sessions_screen(snap_compare, tmp_path, corpus):
    """Past sessions with status and steps; Enter reads a report, r resumes."""
    services = make_services(tmp_path)
    app = SalaApp(services, run=RunRequest("How did renewable energy grow?", web=False, docs=corpus))

    async def run_before(pilot) -> None:
        await finished_run(services)(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
