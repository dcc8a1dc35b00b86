"""The clarifying-questions dialog (issue 15): the model's questions about scope, one input each; Submit hands
back the answers in order, Skip (or Escape) goes on without them."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from sala_report.app.warp.clarify import ANSWER_CHARS


class ClarifyDialog(ModalScreen[tuple[str, ...] | None]):
    """The result is one answer per question ("" for those left empty), or None when the person skips."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Skip")]

    def __init__(self, questions: tuple[str, ...]) -> None:
        super().__init__()
        if not questions:
            raise ValueError("expected at least one question, got none")
        self.questions = questions

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="clarify"):
            yield Label("Before searching: what should the report cover?", classes="dialog-title")
            for n, question in enumerate(self.questions, 1):
                yield Label(f"{n}. {question}", markup=False)  # the model's words: never read as markup
                yield Input(placeholder="your answer (empty: none)", max_length=ANSWER_CHARS, id=f"answer-{n}")
            yield Label("Enter moves to the next answer · Esc skips them all", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Submit", id="submit", variant="primary")
                yield Button("Skip", id="skip")

    def on_mount(self) -> None:
        self.query_one("#answer-1", Input).focus()

    @on(Input.Submitted)
    def next_answer(self, event: Input.Submitted) -> None:
        n = int(str(event.input.id).removeprefix("answer-"))
        if n < len(self.questions):
            self.query_one(f"#answer-{n + 1}", Input).focus()
        else:
            self.submit()

    @on(Button.Pressed, "#submit")
    def submit(self) -> None:
        self.dismiss(tuple(self.query_one(f"#answer-{n}", Input).value for n in range(1, len(self.questions) + 1)))

    @on(Button.Pressed, "#skip")
    def skip(self) -> None:
        self.dismiss(None)
