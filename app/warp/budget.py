"""Budgets that fit the machine: for a small in-process model, the WARP budgets the settings leave at
their defaults are derived from the model's size and the speed measured when it loaded, so that a
default run ends in minutes on whatever CPU it has (issue 11). Larger models keep the released budgets."""

from __future__ import annotations

import dataclasses

from sala_report.app.settings import WarpSettings
from sala_report.app.warp.generator import SMALL_MODEL_PARAMETERS, Speed  # Speed: re-exported for callers

RUN_SECONDS = 240.0  # the steps' share of a default run that should end within five minutes
PASSAGE_TOKENS = 300  # a passage of the default 1,200 characters
DERIVED = ("max_tokens", "passages_for_plan", "passages_per_search", "max_steps", "max_sections", "max_expands")


def planned_steps(sections: int, expands: int, subsections: int = 3) -> int:
    """Steps of a run that writes every section once: a search and an outline, a search and a write per
    section, and per expand one decision plus a search and a write per subsection."""
    return 2 + 2 * sections + expands * (1 + 2 * subsections)


def derive(warp: WarpSettings, speed: Speed, *, run_seconds: float = RUN_SECONDS) -> WarpSettings:
    """`warp` with the budgets it leaves at their defaults fitted to `speed`; unchanged for models of a
    billion parameters and more. A step may spend half its time share reading (prefill) and half
    writing (decode); the step budget leaves a third more for retries."""
    if speed.parameters >= SMALL_MODEL_PARAMETERS:
        return warp
    default = WarpSettings()
    sections = 4
    expands = 1 if planned_steps(sections, 1) * 4.0 <= run_seconds else 0
    steps = planned_steps(sections, expands)
    per_step = run_seconds / (steps * 1.33)
    max_tokens = int(speed.decode_tps * per_step / 2) // 32 * 32
    passages = int(speed.prefill_tps * per_step / 2 / PASSAGE_TOKENS)
    derived = {
        "max_tokens": max(128, min(default.max_tokens, max_tokens)),
        "passages_per_search": max(3, min(default.passages_per_search, passages)),
        "passages_for_plan": max(4, min(default.passages_for_plan, passages * 2)),
        "max_steps": int(steps * 1.5),
        "max_sections": sections,
        "max_expands": expands,
    }
    changes = {k: v for k, v in derived.items() if getattr(warp, k) == getattr(default, k)}
    return dataclasses.replace(warp, **changes)


def describe(before: WarpSettings, after: WarpSettings) -> str:
    """The budgets that changed, for the progress line: "max_tokens 192, max_steps 30"."""
    return ", ".join(f"{k} {getattr(after, k)}" for k in DERIVED if getattr(before, k) != getattr(after, k))
