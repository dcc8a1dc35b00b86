"""Progress within a step: tokens so far and tokens/s, at most every few seconds, reset by each step."""

from __future__ import annotations

from sala_report.app.warp import events as ev
from sala_report.app.warp.throughput import StepThroughput


def test_a_long_step_reports_tokens_and_speed():
    now = [0.0]
    progress = StepThroughput(every_s=5.0, clock=lambda: now[0])
    assert progress(ev.StepStarted("s", 1, "write", 3, "section-1", 1)) is None
    lines = []
    for _ in range(80):  # 8 tokens a second for 10 s (steps exact in binary)
        now[0] += 0.125
        lines.append(progress(ev.TokenDelta("s", 1, "x")))
    shown = [line for line in lines if line]
    assert shown == ["… 40 tokens, 8.0 tokens/s", "… 80 tokens, 8.0 tokens/s"]
    progress(ev.StepStarted("s", 2, "search", 4, "section-2", 1))
    now[0] += 8
    assert progress(ev.TokenDelta("s", 2, "x")) == "… 1 tokens, 0.1 tokens/s"  # a slow prefill shows too
