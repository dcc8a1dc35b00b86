"""Small modal dialogs: ask for a line of text, confirm an action, choose an export format."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet


class TextDialog(ModalScreen[str | None]):
    """One line of text; Enter accepts, Escape cancels (the result is then None)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, prompt: str, *, value: str = "") -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.prompt, classes="dialog-title")
            yield Input(value=self.value, id="dialog-input")
            yield Label("Enter to accept · Esc to cancel", classes="dialog-hint")

    @on(Input.Submitted)
    def accept(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS = [Binding("y", "dismiss(True)", "Yes"), Binding("n,escape", "dismiss(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    @on(Button.Pressed)
    def answer(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ExportDialog(ModalScreen[tuple[str, Path, bool] | None]):
    """Pick a format and a file; the result is (format, path, with the questions asked) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    FORMATS = (
        ("pdf", "PDF"),
        ("html", "HTML (one self-contained file)"),
        ("md", "Markdown"),
        ("json", "JSON"),
        ("docx", "Word (.docx)"),
        ("bib", "BibTeX (the references)"),
        ("ris", "RIS (the references)"),
    )

    def __init__(self, folder: Path, stem: str) -> None:
        super().__init__()
        self.folder = folder
        self.stem = stem

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Export the report", classes="dialog-title")
            with RadioSet(id="export-format"):
                for i, (fmt, label) in enumerate(self.FORMATS):
                    yield RadioButton(label, value=i == 0, name=fmt)
            yield Input(value=str(self.folder / f"{self.stem}.pdf"), id="export-path")
            yield Checkbox(
                "With the questions asked of it (ctrl+k) and their answers, as an appendix", id="with-questions"
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(RadioSet.Changed)
    def format_changed(self, event: RadioSet.Changed) -> None:
        path = Path(self.query_one("#export-path", Input).value)
        self.query_one("#export-path", Input).value = str(path.with_suffix("." + str(event.pressed.name)))

    @on(Button.Pressed, "#export")
    @on(Input.Submitted, "#export-path")
    def export(self) -> None:
        pressed = self.query_one("#export-format", RadioSet).pressed_button
        fmt = str(pressed.name) if pressed is not None else "pdf"
        path = Path(self.query_one("#export-path", Input).value).expanduser()
        self.dismiss((fmt, path, self.query_one("#with-questions", Checkbox).value))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
