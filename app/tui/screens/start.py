"""The start screen: the question, where to look (the web, a folder of documents, or both), and the model."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, RadioButton, RadioSet, Static

from sala_report.app.tui.services import RunRequest

SOURCE_CHOICES = (("web", "The web"), ("docs", "A folder of documents"), ("both", "Both"))


class StartScreen(Screen):
    def __init__(self, *, question: str = "", docs: Path | None = None, web: bool = True, model: str = "") -> None:
        super().__init__()
        self.question = question
        self.docs = docs
        self.choice = "both" if web and docs else "docs" if docs else "web"
        self.model = model

    def compose(self) -> ComposeResult:
        with Vertical(id="start"):
            yield Static("sala-report", id="start-title")
            yield Static(
                "Ask a question; sala-report searches, reads and writes a cited report on this machine.", classes="dim"
            )
            yield Label("Question: what do you want to know?")
            yield Input(self.question, id="question")
            yield Label("Sources")
            with RadioSet(id="sources-choice"):
                for key, label in SOURCE_CHOICES:
                    yield RadioButton(label, value=key == self.choice, name=key)
            yield Label("Folder of documents, e.g. ~/notes (Markdown, text, HTML, PDF)")
            yield Input(str(self.docs or ""), id="docs")
            yield Label("Model (a known name, a .gguf file, a checkpoint folder or a Hugging Face id)")
            yield Input(self.model, id="model")
            with Horizontal(id="start-buttons"):
                yield Button("Start research", id="start-run", variant="primary")
                yield Button("Past sessions", id="open-sessions")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#question", Input).focus()

    @on(Button.Pressed, "#start-run")
    @on(Input.Submitted, "#question")
    def start(self) -> None:
        question = self.query_one("#question", Input).value.strip()
        if not question:
            self.notify("Type a question first.", severity="warning")
            return
        pressed = self.query_one("#sources-choice", RadioSet).pressed_button
        choice = str(pressed.name) if pressed is not None else "web"
        folder = self.query_one("#docs", Input).value.strip()
        docs = Path(folder).expanduser() if folder and choice in ("docs", "both") else None
        if choice in ("docs", "both") and (docs is None or not docs.is_dir()):
            self.notify(f"'{folder}' is not a folder.", severity="error")
            return
        request = RunRequest(
            question, web=choice in ("web", "both"), docs=docs, model=self.query_one("#model", Input).value.strip()
        )
        self.app.start_run(request)

    @on(Button.Pressed, "#open-sessions")
    def sessions(self) -> None:
        self.app.action_show_sessions()
