"""The draft pane: the model's output for the step in progress, streaming, or the whole report on demand."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static

REFRESH_S = 0.15  # Markdown re-renders the whole text: redraw a few times a second, not per token
_TAG = re.compile(r"</?(thought|action)>")


def readable_stream(raw: str, kind: str) -> str:
    """The model's `<thought>…</thought><action>…</action>` answer as Markdown for the pane.

    The thought shows as a quote; a written section as Markdown; a JSON action as a code block.
    """
    thought, _, action = raw.partition("<action>")
    thought = _TAG.sub("", thought).strip()
    action = _TAG.sub("", action).strip()
    parts = []
    if thought:
        parts.append("\n".join("> " + line for line in thought.splitlines()))
    if action:
        parts.append(action if kind == "write" else f"```json\n{action}\n```")
    return "\n\n".join(parts)


class DraftView(VerticalScroll):
    """Shows either the section being written (`section` mode) or the whole report (`report` mode)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = "section"
        self.kind = ""
        self._raw = ""
        self._dirty = False
        self._report = ""

    def compose(self) -> ComposeResult:
        yield Static("Waiting for the first step…", id="draft-heading")
        yield Markdown("", id="draft-body")

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self._flush)

    def step_started(self, heading: str, kind: str) -> None:
        self.kind = kind
        self._raw = ""
        if self.mode == "section":
            self.query_one("#draft-heading", Static).update(heading)
            self._dirty = True

    def token(self, text: str, restart: bool = False) -> None:
        self._raw = text if restart else self._raw + text
        self._dirty = self.mode == "section"

    def section_written(self, heading: str, markdown: str) -> None:
        if self.mode == "section":
            self.query_one("#draft-heading", Static).update(heading)
            self.query_one("#draft-body", Markdown).update(markdown)
            self._dirty = False

    def show_report(self, markdown: str) -> None:
        self.mode = "report"
        self._report = markdown
        self.query_one("#draft-heading", Static).update("The whole report (v: back to the section being written)")
        self.query_one("#draft-body", Markdown).update(markdown)
        self.scroll_home(animate=False)

    def show_section(self) -> None:
        self.mode = "section"
        self.query_one("#draft-heading", Static).update(f"Step in progress: {self.kind or 'waiting'}")
        self._dirty = True

    def _flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.query_one("#draft-body", Markdown).update(readable_stream(self._raw, self.kind))
        self.scroll_end(animate=False)
