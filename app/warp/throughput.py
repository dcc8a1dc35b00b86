"""Progress within a step (tokens so far, tokens per second), so that a long step never looks hung.
Front ends feed it every event and print the lines it returns; it never prints itself."""

from __future__ import annotations

import time
from collections.abc import Callable

from sala_report.app.warp import events as ev


class StepThroughput:
    """Counts the tokens streamed in the current step (one TokenDelta per token, forced ones included)
    and says so at most every `every_s` seconds: `… 120 tokens, 31.5 tokens/s`."""

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.tokens = 0
        self.started = self.last = clock()

    def __call__(self, event) -> str | None:
        """The line to show for `event`, if it is time for one."""
        if isinstance(event, ev.StepStarted):
            self.tokens = 0
            self.started = self.last = self.clock()
            return None
        if not isinstance(event, ev.TokenDelta):
            return None
        if event.restart:
            self.tokens = 0
            return None
        self.tokens += 1
        now = self.clock()
        if now - self.last < self.every_s:
            return None
        self.last = now
        rate = self.tokens / max(now - self.started, 1e-9)
        return f"… {self.tokens} tokens, {rate:.1f} tokens/s"
