"""The WARP state machine (warp.md §1.2) as pure functions over a small checkpoint record.

search → init-plan → (search → write)×N → extend → (search → write)×M → … → nop or budget → done.
Everything the next step needs is in RunState and the outline, so a run resumes from any checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sala_report.app.warp.state import Outline, cursor, deepen_requests, expandable

PHASES = ("search", "init-plan", "write", "extend", "done")


@dataclass
class RunState:
    phase: str = "search"
    step: int = 0  # steps used, retries included
    extends: int = 0  # expand decisions made (failed ones count too, as released)
    attempt: int = 1  # try number of the current phase for the current target
    target: int | None = None  # node the last search was for; None: the outline as a whole
    evidence: list[str] = field(default_factory=list)  # registry keys that search found, shown to the writer
    feedback: str | None = None  # the last rejection, fed back to the retry
    reason: str = ""  # why the run is done
    searched: list[str] = field(default_factory=list)  # every search phrase used so far (evidence mode: none twice)
    review: bool = False  # the first outline waits for the person's review before anything is written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Budget:
    max_steps: int
    max_expands: int
    max_depth: int
    max_retries: int


def moved_to(run: RunState, phase: str, *, target: int | None = None, reason: str = "") -> RunState:
    """A fresh attempt at `phase`: feedback and retry count reset; evidence kept only for a write."""
    evidence = run.evidence if phase == "write" else []
    return RunState(phase, run.step, run.extends, 1, target, evidence, None, reason, list(run.searched))


def after_drafting(run: RunState, outline: Outline, budget: Budget) -> RunState:
    """Every writable node has text: expand (the person's request first), or stop."""
    if deepen_requests(outline, budget.max_depth):
        return moved_to(run, "extend")
    if run.extends >= budget.max_expands:
        return moved_to(run, "done", reason="the expansion budget is used up")
    if not expandable(outline, budget.max_depth):
        return moved_to(run, "done", reason="no section can be expanded further")
    return moved_to(run, "extend")


def next_to_write(run: RunState, outline: Outline, budget: Budget) -> RunState:
    """Search for the cursor node, or decide on deepening once nothing is left to write."""
    loc = cursor(outline)
    if loc is None:
        return after_drafting(run, outline, budget)
    return moved_to(run, "search", target=loc.node.id)


def reconcile(run: RunState, outline: Outline, budget: Budget) -> RunState:
    """After the person's edits: make the pending step agree with the edited outline.

    A search or write aimed at a node that is no longer the cursor (deleted, locked, moved, or an
    earlier node became unwritten) goes back to searching for the new cursor; a pending expand
    decision gives way to new unwritten nodes; a write keeps its evidence only for the same node; a finished run
    given an unwritten section or a deepen request goes back to work."""
    if (
        run.phase == "done"
        and outline.sections
        and (cursor(outline) is not None or deepen_requests(outline, budget.max_depth))
    ):
        return next_to_write(run, outline, budget)  # an edit to a finished report asked for more: write it on resume
    if run.phase == "done" or not outline.sections or (run.phase == "search" and run.target is None):
        return run
    if run.phase == "init-plan":
        return run
    loc = cursor(outline)
    if run.phase in ("search", "write"):
        if loc is not None and loc.node.id == run.target:
            return run
        return next_to_write(run, outline, budget)
    if run.phase == "extend" and loc is not None:
        return moved_to(run, "search", target=loc.node.id)
    return run
