"""Ask the report: a dialog with one input; the answer, cited with the report's reference numbers, shows
below it. The question runs on a worker thread (a model call takes seconds), so the app stays live."""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from sala_report.app.errors import SalaError


class AskDialog(ModalScreen[None]):
    """`answer(question)` returns an object with `.text` and `.references` (app/warp/ask.py's Answer)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, answer: Callable[[str], object]) -> None:
        super().__init__()
        self.answer = answer
        self.asking = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Ask the report (answered from its sources, cited with its numbers)", classes="dialog-title")
            yield Input(placeholder="What did it say about …?", id="ask-input")
            with VerticalScroll(id="ask-scroll"):
                yield Static("", id="ask-answer", markup=False)
            yield Label("Enter to ask · Esc to close", classes="dialog-hint")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if self.asking or not event.value.strip():
            return
        self.asking = True
        self.query_one("#ask-answer", Static).update("thinking …")
        self.ask(event.value)

    @work(thread=True, group="ask", exit_on_error=False)
    def ask(self, question: str) -> None:
        try:
            got = self.answer(question)
            refs = "\n".join(f"[{r.number}] {r.title} — {r.location}" for r in got.references)
            text = got.text + (f"\n\n{refs}" if refs else "")
        except (SalaError, ValueError) as e:  # one clear line; the question stays in the input
            text = f"Could not answer: {e}"
        self.app.call_from_thread(self.show, text)

    def show(self, text: str) -> None:
        self.asking = False
        self.query_one("#ask-answer", Static).update(text)
