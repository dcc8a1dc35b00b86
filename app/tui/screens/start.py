"""The start screen: the question, where to look (the web, a folder of documents, or both), the model, and,
folded away, web domains to use or avoid and the report the person wants (length, language, instructions,
their own outline, plan review)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Collapsible, Footer, Input, Label, RadioButton, RadioSet, Select, Static

from sala_report.app.errors import SalaError
from sala_report.app.runs import domain_list
from sala_report.app.settings import ModelSettings, WarpSettings
from sala_report.app.tui.services import RunRequest
from sala_report.app.warp.brief import LENGTHS, brief_from
from sala_report.app.weight_format import QUANTIZE_HINT, describe_weights, quantize_problem

SOURCE_CHOICES = (("web", "The web"), ("docs", "A folder of documents"), ("both", "Both"))


class StartScreen(Screen):
    def __init__(
        self,
        *,
        question: str = "",
        docs: Path | None = None,
        web: bool = True,
        model: str = "",
        warp: WarpSettings | None = None,
    ) -> None:
        super().__init__()
        self.question = question
        self.docs = docs
        self.choice = "both" if web and docs else "docs" if docs else "web"
        self.model = model
        self.warp = warp  # the [warp] defaults for the report's fields (None: the app's settings)

    def compose(self) -> ComposeResult:
        if self.warp is None:
            settings = getattr(getattr(self.app, "services", None), "settings", None)
            self.warp = getattr(settings, "warp", None) or WarpSettings()
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
            yield Static(self._weights(self.model), id="weights", classes="dim")
            with Collapsible(
                title="More: web domains; the report's length, language, instructions, outline", id="report-options"
            ):
                yield Label("Read web pages only from these domains, comma or space separated (empty: any)")
                yield Input(placeholder="e.g. nature.com, arxiv.org", id="include-domains")
                yield Label("Never read web pages from these domains")
                yield Input(placeholder="e.g. pinterest.com", id="exclude-domains")
                yield Label("Length")
                yield Select([(n, n) for n in LENGTHS], value=self.warp.length, allow_blank=False, id="length")
                yield Label("Language of the report, e.g. zh or German (empty: the question's)")
                yield Input(self.warp.language, id="language")
                yield Label("Instructions: audience, tone, what to cover (or @file)")
                yield Input(self.warp.instructions, id="instructions")
                yield Label("Your own outline: a Markdown file of # / ## / ### headings (empty: planned)")
                yield Input(self.warp.outline, id="outline")
                yield Checkbox("Review the outline before writing", self.warp.review_plan, id="review-plan")
                yield Checkbox("Ask me about the scope before searching", self.warp.clarify, id="clarify")
            with Horizontal(id="start-buttons"):
                yield Button("Start research", id="start-run", variant="primary")
                yield Button("Past sessions", id="open-sessions")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#question", Input).focus()

    def _model_settings(self) -> ModelSettings:
        settings = getattr(getattr(self.app, "services", None), "settings", None)
        return getattr(settings, "model", None) or ModelSettings()

    def _weights(self, source: str) -> str:
        """The weight format the model will load in, from the settings and the path alone: torch is not loaded
        yet, and the first paint must not wait for it."""
        cfg = self._model_settings()
        if cfg.backend != "local":
            return ""
        facts = getattr(getattr(self.app, "services", None), "facts", None)  # its device is told without torch
        device = getattr(facts, "device", None) or cfg.device
        return "Weights: " + describe_weights(cfg.quantize, source or cfg.source, device, cfg.dtype)

    @on(Input.Changed, "#model")
    def model_changed(self, event: Input.Changed) -> None:
        self.query_one("#weights", Static).update(self._weights(event.value.strip()))

    @on(Button.Pressed, "#start-run")
    @on(Input.Submitted, "#question")
    def start(self) -> None:
        question = self.query_one("#question", Input).value.strip()
        if not question:
            self.notify("Type a question first.", severity="warning")
            return
        pressed = self.query_one("#sources-choice", RadioSet).pressed_button
        choice = str(pressed.name) if pressed is not None else "web"
        model, cfg = self.query_one("#model", Input).value.strip(), self._model_settings()
        problem = quantize_problem(cfg.quantize, model or cfg.source) if cfg.backend == "local" else None
        if problem is not None:
            self.notify(f"{problem}. {QUANTIZE_HINT}", severity="error")
            return
        folder = self.query_one("#docs", Input).value.strip()
        docs = Path(folder).expanduser() if folder and choice in ("docs", "both") else None
        if choice in ("docs", "both") and (docs is None or not docs.is_dir()):
            self.notify(f"'{folder}' is not a folder.", severity="error")
            return
        try:
            brief, outline = brief_from(
                self.warp,
                str(self.query_one("#length", Select).value),
                self.query_one("#language", Input).value,
                self.query_one("#instructions", Input).value,
                self.query_one("#outline", Input).value.strip(),
                self.query_one("#review-plan", Checkbox).value,
                self.query_one("#clarify", Checkbox).value,
            )
        except SalaError as e:
            self.notify(str(e), severity="error")
            return
        try:  # read as the --include-domain / --exclude-domain flags are, and added to the settings' lists
            include = domain_list(self.query_one("#include-domains", Input).value)
            exclude = domain_list(self.query_one("#exclude-domains", Input).value)
        except ValueError as e:
            self.notify(f"Web domains: {e}", severity="error")
            return
        request = RunRequest(
            question,
            web=choice in ("web", "both"),
            docs=docs,
            model=model,
            brief=brief,
            outline=outline,
            include_domains=include,
            exclude_domains=exclude,
        )
        self.app.start_run(request)

    @on(Button.Pressed, "#open-sessions")
    def sessions(self) -> None:
        self.app.action_show_sessions()
