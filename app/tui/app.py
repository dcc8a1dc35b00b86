"""The sala-report terminal app: wires screens, keys and commands. Behaviour lives in the screens and
widgets; the engine reaches the app only as messages (see screens/research.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.screen import Screen

from sala_report.app.errors import SalaError
from sala_report.app.tui import keys
from sala_report.app.tui.screens.clarify import ClarifyDialog
from sala_report.app.tui.screens.help import HelpScreen
from sala_report.app.tui.screens.research import ResearchScreen
from sala_report.app.tui.screens.sessions import SessionsScreen
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.tui.services import RunRequest, Services
from sala_report.app.warp.clarify import Asked, answered, questions_for, with_questions
from sala_report.app.warp.prompts import PromptTooLong


class SalaApp(App):
    """`first` decides the opening screen: a run to start at once, a session to resume, or the start form."""

    CSS_PATH = "app.tcss"
    TITLE = "sala-report"
    BINDINGS = keys.APP

    def __init__(
        self,
        services: Services,
        *,
        keymap: dict[str, str] | None = None,
        theme: str = "textual-dark",
        config_path: str = "config.toml",
        run: RunRequest | None = None,
        resume: str | None = None,
        start_form: StartScreen | None = None,
        auto_export: str | None = None,
    ) -> None:
        super().__init__()
        self.services = services
        self.keymap = dict(keymap or {})
        self.config_path = config_path
        self._first_run = run
        self._first_resume = resume
        self._start_form = start_form
        self._theme_name = theme
        self.auto_export = auto_export  # a format to export to when a run ends (the demo asks for "pdf")
        self.exported: list[Path] = []  # reports written while the app ran, for the line printed after it quits
        self.session_ids: list[str] = []  # sessions run or resumed here

    def on_mount(self) -> None:
        if self._theme_name in self.available_themes:
            self.theme = self._theme_name
        self.set_keymap(self.keymap)
        unknown = keys.unknown_ids(self.keymap)
        if unknown:
            self.notify(f"[ui.keymap] names no such action: {', '.join(unknown)} (F1 lists them)", severity="warning")
        if self._first_run is not None and _asks_first(self._first_run):
            self.start_run(self._first_run)  # `run --clarify` at a terminal: the questions come first
        elif self._first_run is not None:
            self.push_screen(ResearchScreen(self.services, request=self._first_run, auto_export=self.auto_export))
        elif self._first_resume is not None:
            self.resume_run(self._first_resume)  # `resume ID` at a terminal: waiting questions come first
        else:
            self.push_screen(self._start_form or StartScreen(model=self.services.facts.model))

    def farewell(self) -> list[str]:
        """What to print once the screen is gone: where the reports are, or how to get one."""
        if self.exported:
            return [f"report: {path}" for path in dict.fromkeys(self.exported)]
        return [
            f"session {sid} is saved; `sala-report export {sid}` writes its report, "
            f"`sala-report resume {sid}` continues it"
            for sid in dict.fromkeys(self.session_ids)
        ]

    def start_run(self, request: RunRequest) -> None:
        if _asks_first(request):
            self.notify("Asking the model what the report should cover …", title="Clarifying questions")
            self.ask_first(request)
            return
        screen = ResearchScreen(self.services, request=request)
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:  # `run --clarify` at a terminal: the questions came first, over no screen of ours
            self.push_screen(screen)

    @work(thread=True, exclusive=True, group="clarify", exit_on_error=False, name="clarify")
    def ask_first(self, request: RunRequest) -> None:
        """The clarifying questions, before the run starts (loading the model may take a while)."""
        try:
            asked = questions_for(self.services, request)
        except (SalaError, PromptTooLong) as e:
            self.call_from_thread(self.notify, str(e), title="No clarifying questions", severity="error")
            return
        self.call_from_thread(self._clarified, request, asked)

    def _clarified(self, request: RunRequest, asked: Asked) -> None:
        brief = with_questions(request.brief, asked.questions)
        if not asked.questions:
            self.notify("The model asked no usable question; the research starts without.", title="Clarifying")
            self.start_run(dataclasses.replace(request, brief=brief))
            return

        def answers_given(answers: tuple[str, ...] | None) -> None:  # None: skipped
            self.start_run(dataclasses.replace(request, brief=answered(brief, answers or ())))

        self.push_screen(ClarifyDialog(asked.questions), answers_given)

    def resume_run(self, session_id: str) -> None:
        """Continue a stored session; one waiting for answers to its clarifying questions shows them first."""
        questions = self.services.waiting_questions(session_id)
        if questions:
            self.push_screen(ClarifyDialog(questions), lambda answers: self._resume_with(session_id, answers))
        else:
            self._resume_with(session_id, None)

    def _resume_with(self, session_id: str, answers: tuple[str, ...] | None) -> None:
        """`answers` None: skipped, the run goes on without them (as `resume ID` without --answers)."""
        screen = ResearchScreen(self.services, session_id=session_id, answers=answers)
        if len(self.screen_stack) <= 1:  # `resume ID` at a terminal: no screen of ours yet
            self.push_screen(screen)
            return
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(screen)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.keymap, self.config_path))

    def action_new_research(self) -> None:
        self.push_screen(StartScreen(model=self.services.facts.model))

    def action_show_sessions(self) -> None:
        self.push_screen(SessionsScreen(self.services))

    def action_save_screenshot(self) -> None:
        folder = self.services.reports_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = self.save_screenshot(path=str(folder))
        self.notify(path, title="Screenshot saved")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from (c for c in super().get_system_commands(screen) if c.title != "Screenshot")
        yield SystemCommand(
            "Save a screenshot", "An SVG of the screen, in the reports folder", self.action_save_screenshot
        )
        yield SystemCommand("Help: keys", "Every key binding and how to change it", self.action_help)
        yield SystemCommand("New research", "Ask a new question", self.action_new_research)
        yield SystemCommand("Sessions", "Read or resume a past run", self.action_show_sessions)
        if not isinstance(screen, ResearchScreen):
            return
        if screen.check_action("toggle_pause", ()):  # only while the run can still pause or stop
            yield SystemCommand(
                "Pause or resume the run",
                "Stops the step in progress; it is done again on resume",
                screen.action_toggle_pause,
            )
            yield SystemCommand(
                "Cancel the run", "Stops the step in progress; every finished step is saved", screen.action_cancel_run
            )
        yield SystemCommand(
            "Show the whole report / the section being written", "Toggle the draft pane", screen.action_toggle_report
        )
        yield SystemCommand("Export the report", "PDF, HTML, Markdown or JSON", screen.action_export)


def _asks_first(request: RunRequest) -> bool:
    """Whether the person is to answer clarifying questions before the run starts (answers given beforehand,
    `run --answers`, are paired with the questions by the engine instead)."""
    brief = request.brief
    return brief is not None and brief.clarify and brief.questions is None and brief.answers is None
