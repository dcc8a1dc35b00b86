"""The status line: step and budget, elapsed time, tokens per second, model and device, search engine,
and whatever is degraded right now."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual.widgets import Static


@dataclass(frozen=True)
class Status:
    # starting | running | pausing… | paused | resuming… | cancelling | done | partial | cancelled | failed
    state: str = "starting"
    step: int = 0
    max_steps: int = 0
    elapsed_s: float = 0.0
    tokens_per_s: float | None = None
    model: str = ""
    device: str = ""
    search: str = ""
    degraded: str | None = None


STATE_STYLES = {
    "running": "bold green",
    "pausing…": "bold yellow",
    "paused": "bold yellow",
    "resuming…": "bold green",
    "cancelling": "bold red",
    "failed": "bold red",
    "done": "bold green",
    "partial": "bold yellow",
    "cancelled": "bold red",
}


def render_status(s: Status) -> Text:
    minutes, seconds = divmod(int(s.elapsed_s), 60)
    text = Text()
    text.append(f" {s.state} ", style=f"reverse {STATE_STYLES.get(s.state, 'bold')}")
    text.append(f"  step {s.step}/{s.max_steps}" if s.max_steps else f"  step {s.step}")
    text.append(f"  {minutes:d}:{seconds:02d} elapsed")
    if s.tokens_per_s is not None:
        text.append(f"  {s.tokens_per_s:.1f} tok/s")
    if s.model:
        text.append(f"  {s.model}" + (f" on {s.device}" if s.device else ""), style="cyan")
    if s.search:
        text.append(f"  search: {s.search}", style="dim")
    if s.degraded:
        text.append(f"  ⚠ {s.degraded}", style="bold yellow")
    return text


class StatusLine(Static):
    def __init__(self, status: Status, **kwargs) -> None:
        super().__init__(render_status(status), **kwargs)
        self.status = status

    def change(self, **fields) -> None:
        self.status = replace(self.status, **fields)
        self.update(render_status(self.status))
