"""The activity log: one line per step, search, edit and problem, with the run's elapsed time."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog


class ActivityLog(RichLog):
    def __init__(self, **kwargs) -> None:
        super().__init__(wrap=True, markup=False, max_lines=2000, min_width=20, **kwargs)
        self.messages: list[str] = []  # every entry's text, unwrapped (what was said, for the person and tests)

    def entry(self, elapsed_s: float, message: str, style: str = "") -> None:
        minutes, seconds = divmod(int(elapsed_s), 60)
        line = Text(f"{minutes:02d}:{seconds:02d} ", style="dim")
        line.append(message, style=style)
        self.messages.append(message)
        self.write(line)
