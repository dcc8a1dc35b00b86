"""The research screen drives the real engine (scripted generator, real store): every outline edit made
mid-run reaches the engine through its queue, and after each one the outline the engine stored is the
outline on the screen. Pause, resume and cancel too."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import RadioButton
from tui_helpers import make_services, until
from warp_fakes import Policy

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.dialogs import ConfirmDialog, ExportDialog, TextDialog
from sala_report.app.tui.widgets.draft_view import DraftView
from sala_report.app.tui.widgets.outline_tree import OutlineTree
from sala_report.app.warp import WarpStore, events
from sala_report.app.warp.state import walk

pytestmark = pytest.mark.anyio
APPLIED = (events.EditApplied, events.EditRejected)


def stored_outline(services, session_id):
    outline = WarpStore(services.store).outline(session_id)
    return [
        (loc.number, loc.node.title, loc.depth, loc.node.locked, loc.node.deepen, loc.node.content is not None)
        for loc in walk(outline)
    ]


def screen_outline(tree: OutlineTree):
    rows = []

    def visit(node):
        for child in node.children:
            row = child.data
            written = row.state in ("written", "flagged")
            rows.append((row.number, row.title, row.depth, row.state == "locked", row.deepen, written, row.pending))
            visit(child)

    visit(tree.root)
    return rows


def assert_screen_matches_engine(screen, services):
    shown = screen_outline(screen.query_one(OutlineTree))
    assert all(not pending for *_, pending in shown), f"edits still pending: {shown}"
    assert [row[:6] for row in shown] == stored_outline(services, screen.session_id)


def shown(screen) -> list[str]:
    """The outline pane's rows as "number title", to compare with the outline the person expects."""
    return [f"{number} {title}" for number, title, *_ in screen_outline(screen.query_one(OutlineTree))]


def select(tree: OutlineTree, number: str) -> None:
    tree.cursor_line = next(i for i in range(tree.last_line + 1) if tree.get_node_at_line(i).data.number == number)


async def edit_and_wait(pilot, services, *keys: str, text: str | None = None, confirm: bool = False) -> None:
    """Press `keys` on the outline (answering its dialog), wait for the engine, compare the outlines."""
    screen = pilot.app.screen
    done = sum(isinstance(e, APPLIED) for e in services.seen)
    await pilot.press(*keys)
    if text is not None:
        await until(pilot, lambda: isinstance(pilot.app.screen, TextDialog), what="the title dialog")
        pilot.app.screen.query_one("#dialog-input").value = text
        await pilot.press("enter")
    if confirm:
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog), what="the confirmation")
        await pilot.press("y")
    await until(
        pilot,
        lambda: sum(isinstance(e, APPLIED) for e in services.seen) > done and not screen.outline.pending,
        what=f"the engine to apply {keys}",
    )
    rejected = [(e.edit, e.reason) for e in services.seen if isinstance(e, events.EditRejected)]
    applied = [e.edit for e in services.seen if isinstance(e, events.EditApplied)]
    assert not rejected, (rejected, applied)
    assert_screen_matches_engine(screen, services)


async def test_every_outline_edit_mid_run_matches_the_engine(tmp_path, request_for):
    services = make_services(tmp_path, delay_s=0.002)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.SectionWritten) >= 1, what="a written section")
        await pilot.press("p")
        await until(
            pilot, lambda: services.count(events.Paused) == 1 and screen.outline.view is not None, what="the pause"
        )
        assert screen.query_one("#status").status.state == "paused"
        assert_screen_matches_engine(screen, services)
        tree = screen.query_one(OutlineTree)
        tree.focus()

        select(tree, "1")
        await edit_and_wait(pilot, services, "a", text="Wind and sun together")  # a sibling after 1
        assert stored_outline(services, screen.session_id)[-1][1] != "Wind and sun together"
        select(tree, "2")
        await edit_and_wait(pilot, services, "A", text="Hybrid parks")  # a child of 2
        select(tree, "2")
        await edit_and_wait(pilot, services, "r", text="Wind and solar together")  # rename
        top = ["1 Solar power", "2 Wind and solar together", "2.1 Hybrid parks"]
        assert shown(screen) == [*top, "3 Storage", "4 Policy"]
        select(tree, "3")
        await edit_and_wait(pilot, services, "J")  # move down
        assert shown(screen) == [*top, "3 Policy", "4 Storage"]
        select(tree, "4")
        await edit_and_wait(pilot, services, "K")  # move up
        assert shown(screen) == [*top, "3 Storage", "4 Policy"]
        select(tree, "4")
        await edit_and_wait(pilot, services, "greater_than_sign")  # indent: under 3
        assert shown(screen) == [*top, "3 Storage", "3.1 Policy"]
        select(tree, "3.1")
        await edit_and_wait(pilot, services, "less_than_sign")  # outdent: back to the top level, after 3
        assert shown(screen) == [*top, "3 Storage", "4 Policy"]
        select(tree, "2.1")
        await edit_and_wait(pilot, services, "less_than_sign")  # outdent: after its old parent, not after 1
        assert shown(screen) == [
            "1 Solar power",
            "2 Wind and solar together",
            "3 Hybrid parks",
            "4 Storage",
            "5 Policy",
        ]
        select(tree, "3")
        await edit_and_wait(pilot, services, "greater_than_sign")  # and back under 2
        assert shown(screen) == [*top, "3 Storage", "4 Policy"]
        select(tree, "4")
        await edit_and_wait(pilot, services, "l")  # lock
        assert [r for r in stored_outline(services, screen.session_id) if r[0] == "4"][0][3] is True
        await edit_and_wait(pilot, services, "l")  # unlock
        await edit_and_wait(pilot, services, "e")  # deepen
        assert [r for r in stored_outline(services, screen.session_id) if r[0] == "4"][0][4] is True
        select(tree, "1")
        await edit_and_wait(pilot, services, "w")  # rewrite the section already written
        select(tree, "2.1")
        await edit_and_wait(pilot, services, "x", confirm=True)  # delete
        before = stored_outline(services, screen.session_id)
        select(tree, "2")
        await edit_and_wait(pilot, services, "r", text="Renamed, then undone")
        await edit_and_wait(pilot, services, "u")  # undo: the inverse rename goes through the queue
        assert stored_outline(services, screen.session_id) == before

        steps = services.count(events.StepStarted)
        await pilot.press("p")  # resume
        await until(pilot, lambda: services.count(events.StepStarted) > steps, what="a step after resuming")
        assert services.count(events.Unpaused) == 1
        await until(pilot, lambda: services.count(events.Finished) == 1, timeout=90, what="the end of the run")
        await pilot.pause(0.1)
        assert_screen_matches_engine(screen, services)
        assert "2 Wind and solar together" in services.report_markdown(screen.session_id)


async def test_an_edit_made_while_generating_shows_pending_until_applied(tmp_path, request_for):
    release = threading.Event()

    def slow_write(request):  # the model is busy writing until the test lets it finish
        release.wait(timeout=30)
        return Policy().write(request)

    services = make_services(tmp_path, script={"write": [slow_write]})
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(
            pilot,
            lambda: (
                any(isinstance(e, events.StepStarted) and e.kind == "write" for e in services.seen)
                and screen.outline.view is not None
            ),
            what="the first write step",
        )
        tree = screen.query_one(OutlineTree)
        tree.focus()
        select(tree, "2")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, TextDialog))
        app.screen.query_one("#dialog-input").value = "Storage, renamed mid-step"
        await pilot.press("enter")
        labels = [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]
        assert "2 (pending: rename → Storage, renamed mid-step) Storage" in " | ".join(labels)
        assert services.count(events.EditApplied) == 0  # the engine applies edits between steps only
        release.set()
        await until(
            pilot, lambda: services.count(events.EditApplied) == 1 and not screen.outline.pending, what="the rename"
        )
        labels = [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]
        assert any("2 Storage, renamed mid-step" in label and "pending" not in label for label in labels), labels
        await pilot.press("escape")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the cancellation")
        await pilot.pause(0.1)
        assert_screen_matches_engine(screen, services)  # compared once the engine has stopped


async def test_escape_cancels_the_run_and_keeps_what_was_written(tmp_path, request_for):
    services = make_services(tmp_path, delay_s=0.01)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.SectionWritten) >= 1, what="a written section")
        await pilot.press("escape")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the cancellation")
        await pilot.pause(0.1)
        finished = next(e for e in services.seen if isinstance(e, events.Finished))
        assert finished.status == "cancelled"
        assert screen.query_one("#status").status.state == "cancelled"
        assert WarpStore(services.store).session(screen.session_id).status == "cancelled"
        assert "[1]" in services.report_markdown(screen.session_id)  # what was written is kept
        assert_screen_matches_engine(screen, services)


async def test_the_whole_report_and_export_from_the_app(tmp_path, request_for):
    services = make_services(tmp_path)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")
        await pilot.press("v")
        draft = screen.query_one(DraftView)
        assert draft.mode == "report" and draft._report == services.report_markdown(screen.session_id)
        await pilot.press("v")
        assert draft.mode == "section"

        await pilot.press("ctrl+e")
        await until(pilot, lambda: isinstance(app.screen, ExportDialog), what="the export dialog")
        app.screen.query(RadioButton)[1].value = True  # HTML
        await pilot.pause()
        path = app.screen.query_one("#export-path").value
        assert path.endswith(".html") and path.startswith(str(services.reports_dir))
        await pilot.click("#export")
        await until(pilot, lambda: Path(path).exists(), what="the exported file")
        assert "<!doctype html>" in Path(path).read_text(encoding="utf-8")
