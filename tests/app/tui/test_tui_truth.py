"""The screen says what is actually happening: pause stops the model at once and the status, timer and
keys follow the engine's real state; a finished session opened again shows its stored outline, sources,
budget and search mode; every pane numbers citations as the export does and names sections as the outline
shows them. Real engine and store, scripted generator; expected values are written out, not read back
from the engine."""

from __future__ import annotations

import re
import threading

import pytest
from textual.widgets import Markdown
from tui_helpers import Clock, make_services, until
from warp_fakes import Policy, shown_keys

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.dialogs import ConfirmDialog, TextDialog
from sala_report.app.tui.widgets.activity_log import ActivityLog
from sala_report.app.tui.widgets.outline_tree import OutlineTree
from sala_report.app.tui.widgets.sources_table import SourcesTable
from sala_report.app.warp import WarpStore, events

pytestmark = pytest.mark.anyio

# What the scripted policy plans (warp_fakes.SECTIONS), and its one expansion of the first section.
PLANNED = ["1 Solar power", "2 Storage", "3 Policy"]
FINISHED = ["1 Solar power", "1.1 Costs", "1.2 Adoption", "2 Storage", "3 Policy"]
CORPUS_FILES = {"solar.md", "batteries.md", "wind.md", "policy.md"}


def shown_rows(screen) -> list[str]:
    tree = screen.query_one(OutlineTree)
    return [
        f"{row.number} {row.title}".strip()
        for row in (tree.get_node_at_line(i).data for i in range(tree.last_line + 1))
    ]


def offered(app) -> set[str]:
    """Actions the footer offers now (a binding whose check_action says no is left out)."""
    return {b.binding.action for b in app.active_bindings.values() if b.enabled}


def status(screen):
    return screen.query_one("#status").status


def log_text(screen) -> str:
    return "\n".join(screen.query_one(ActivityLog).messages)


def long_write(request) -> str:
    """A write that would stream for about ten seconds (the generator's delay per 16 characters)."""
    return Policy().write(request).replace("</action>", " More words." * 700 + "</action>")


async def test_pause_stops_the_step_at_once_and_the_screen_follows_the_engine(tmp_path, request_for):
    clock = Clock()
    services = make_services(tmp_path, delay_s=0.02, script={"write": [long_write]}, clock=clock, max_steps=12)
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen

        def write_streaming() -> bool:
            seen = list(services.seen)
            starts = [i for i, e in enumerate(seen) if isinstance(e, events.StepStarted) and e.kind == "write"]
            return bool(starts) and any(isinstance(e, events.TokenDelta) for e in seen[starts[0] :])

        await until(pilot, write_streaming, what="the first write to stream")
        step = next(e.step for e in services.seen if isinstance(e, events.StepStarted) and e.kind == "write")
        clock.now += 10
        await pilot.pause(1.2)  # one tick of the status line
        assert status(screen).elapsed_s == 10 and status(screen).tokens_per_s is not None

        screen.action_toggle_pause()  # what "p" does; checked before the engine's answer can arrive
        assert status(screen).state == "pausing…"  # not "paused" while the model may still be writing
        await until(pilot, lambda: services.count(events.Paused) == 1, timeout=3, what="the model to stop")
        await pilot.pause(0.1)
        paused = next(e for e in services.seen if isinstance(e, events.Paused))
        assert paused.redo_step == step and status(screen).state == "paused"
        assert WarpStore(services.store).checkpoint(screen.session_id).step == step - 1  # nothing of it kept
        deltas = services.count(events.TokenDelta)
        clock.now += 50
        await pilot.pause(1.2)
        assert services.count(events.TokenDelta) == deltas  # it really stopped
        assert status(screen).elapsed_s == 10 and status(screen).tokens_per_s is None  # the timer stopped too
        assert "paused (step" in log_text(screen)
        assert {"toggle_pause", "cancel_run"} <= offered(app)

        await pilot.press("p")
        await until(
            pilot,
            lambda: sum(isinstance(e, events.StepStarted) and e.step == step for e in services.seen) == 2,
            what="the stopped step to start again",
        )
        await until(pilot, lambda: services.count(events.Finished) == 1, timeout=60, what="the end of the run")
        await pilot.pause(0.2)
        assert status(screen).state in ("done", "partial")
        ended = status(screen).elapsed_s
        clock.now += 100
        await pilot.pause(1.2)
        assert status(screen).elapsed_s == ended and status(screen).tokens_per_s is None
        assert not {"toggle_pause", "cancel_run"} & offered(app)  # nothing left to pause or cancel
        palette = [c.title for c in app.get_system_commands(screen)]
        assert "Export the report" in palette and not any("Pause" in t or "Cancel" in t for t in palette)
        await pilot.press("p")
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert status(screen).state in ("done", "partial") and "cancelling" not in log_text(screen)


async def test_a_finished_session_opened_again_shows_what_it_has(tmp_path, request_for):
    first = make_services(tmp_path, max_steps=16, web=False)
    result = first.start(request_for).run()
    first.close()
    assert result.status == "done" and result.steps < 16

    services = make_services(tmp_path, max_steps=140)  # today's settings: a bigger budget, the web on
    assert services.facts.search == "duckduckgo" and services.facts.max_steps == 140
    app = SalaApp(services, resume=result.session_id)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the resumed session to report")
        await pilot.pause(0.2)
        assert shown_rows(screen) == FINISHED
        line = status(screen)
        assert (line.state, line.step, line.max_steps, line.search) == ("done", result.steps, 16, "your documents only")
        table = screen.query_one(SourcesTable)
        files = {table.get_cell(key, "where") for key in table.rows}
        assert files == CORPUS_FILES
        assert screen.query_one("#draft-body", Markdown).source.startswith("# Renewable energy today")
        assert not {"toggle_pause", "cancel_run"} & offered(app)


def weak_then_good(request) -> str:
    """A write with one weakly supported citation (the sentence shares no words with the passage)."""
    keys = shown_keys(request)
    good = Policy().write(request).split("<action>")[1].removesuffix("</action>")
    return (
        f"<thought>x</thought>\n<action>Kittens nap quietly beside warm windows \\cite{{{keys[-1]}}}. {good}</action>"
    )


async def test_one_citation_numbering_everywhere_the_exports(tmp_path, request_for):
    services = make_services(tmp_path, script={"write": [Policy().write, weak_then_good]})
    hold, held = threading.Event(), threading.Event()
    last_written: list = []

    def hold_after_the_last_planned_section(event) -> None:  # on the engine's thread: it waits here
        if isinstance(event, events.SectionWritten) and event.position == "section-3":
            last_written.append(event)
        elif isinstance(event, events.Checkpointed) and last_written and not held.is_set():
            held.set()
            hold.wait(timeout=30)

    start = services.start

    def start_and_hold(request):  # subscribed before the engine runs
        engine = start(request)
        engine.subscribe(hold_after_the_last_planned_section)
        return engine

    services.start = start_and_hold
    app = SalaApp(services, run=request_for)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, held.is_set, timeout=90, what="the third section")
        await pilot.pause(0.2)
        report = services.report_markdown(screen.session_id)  # the export as it stands now
        section = re.search(r"(?ms)^## 3 Policy\n\n(.*?)(?=\n\n#|\n\n\*⚑|\Z)", report).group(1)
        assert "[" in section
        assert screen.query_one("#draft-body", Markdown).source == section  # the draft pane, as exported
        references = dict(re.findall(r"(?m)^\[(\d+)\] .* — .*/([^/\n]+)$", report))  # n -> file name
        table = screen.query_one(SourcesTable)
        numbered = {table.get_cell(k, "n"): table.get_cell(k, "where") for k in table.rows if table.get_cell(k, "n")}
        assert numbered == references and len(references) >= 2
        log = log_text(screen)
        assert "textid" not in log and re.search(r"weak support for \[\d+\] in 2 Storage", log), log
        flagged_n = re.search(r"weak support for \[(\d+)\]", log).group(1)
        storage = re.search(r"(?ms)^## 2 Storage\n\n(.*?)\n\n#", report).group(1)
        assert storage.startswith(f"Kittens nap quietly beside warm windows [{flagged_n}]⚑.")
        shown = next(
            e.markdown for e in services.seen if isinstance(e, events.SectionWritten) and e.position == "section-2"
        )
        assert shown == storage  # as the draft pane showed it when it was written, weak mark and all
        hold.set()
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the end of the run")


async def test_the_log_names_sections_as_shown_and_a_new_one_appears_in_its_place(tmp_path, request_for):
    release = threading.Event()

    def slow_write(request):
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
        tree.cursor_line = 0
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, TextDialog))
        app.screen.query_one("#dialog-input").value = "Grids"
        await pilot.press("enter")
        await pilot.pause(0.05)
        assert shown_rows(screen) == ["1 Solar power", "Grids", "2 Storage", "3 Policy"]  # where it will be
        await pilot.press("p")  # the write in flight is dropped; the edit applies before the pause
        release.set()
        await until(
            pilot,
            lambda: services.count(events.Paused) == 1 and not screen.outline.pending,
            what="the added section and the pause",
        )
        await pilot.pause(0.05)
        assert shown_rows(screen) == ["1 Solar power", "2 Grids", "3 Storage", "4 Policy"]
        tree.cursor_line = shown_rows(screen).index("4 Policy")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until(pilot, lambda: services.count(events.EditApplied) == 2, what="the deletion")
        await pilot.pause(0.05)
        log = log_text(screen)
        assert "edit queued: add 'Grids'" in log
        assert "edit queued: delete 4 Policy" in log and "edit applied: delete 4 Policy" in log, log
        assert shown_rows(screen)[-1] != "4 Policy"
        await pilot.press("escape")
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the cancellation")
