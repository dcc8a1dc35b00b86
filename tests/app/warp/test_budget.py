"""Budgets that fit the machine (issue 11): what `derive` gives for a small model at a measured speed,
checked against the cost model worked out by hand, and that a setting a person chose is never changed."""

from __future__ import annotations

import dataclasses

import pytest

from sala_report.app.settings import WarpSettings
from sala_report.app.warp.budget import RUN_SECONDS, Speed, derive, describe, planned_steps

SMOLLM2 = 134_515_008  # parameters of SmolLM2-135M


def test_planned_steps_count_each_phase():
    # 1 search + 1 outline, 4 x (search + write), 1 x (decision + 3 x (search + write))
    assert planned_steps(4, 1, 3) == 2 + 8 + 7 == 17
    assert planned_steps(3, 0) == 8


def test_a_small_model_on_an_idle_two_core_cpu():
    # SmolLM2 measured idle on this machine: about 750 tokens/s reading, 32 tokens/s writing
    warp = derive(WarpSettings(), Speed(SMOLLM2, 750.0, 32.0))
    # 17 planned steps, a third more for retries: 240 s / (17 * 1.33) = 10.6 s a step, half of it writing
    per_step = RUN_SECONDS / (17 * 1.33)
    assert warp.max_tokens == int(32.0 * per_step / 2) // 32 * 32 == 160
    assert warp.passages_per_search == 10  # 750 * 5.3 / 300 = 13 passages fit: capped at the default
    assert warp.passages_for_plan == 20
    assert (warp.max_steps, warp.max_sections, warp.max_expands) == (25, 4, 1)
    # the cost model: every planned step within its share, so the run within RUN_SECONDS
    reading = (warp.passages_per_search * 300) / 750.0
    writing = warp.max_tokens / 32.0
    assert 17 * (reading + writing) <= RUN_SECONDS


def test_a_loaded_machine_gets_smaller_budgets_never_below_the_floors():
    fast, slow = derive(WarpSettings(), Speed(SMOLLM2, 750, 32)), derive(WarpSettings(), Speed(SMOLLM2, 40, 1.5))
    assert slow.max_tokens < fast.max_tokens and slow.passages_per_search < fast.passages_per_search
    assert slow.max_tokens == 128 and slow.passages_per_search == 3 and slow.passages_for_plan == 4


def test_settings_a_person_chose_are_kept():
    chosen = WarpSettings(max_tokens=512, max_steps=60, passages_per_search=7)
    warp = derive(chosen, Speed(SMOLLM2, 750, 32))
    assert (warp.max_tokens, warp.max_steps, warp.passages_per_search) == (512, 60, 7)
    assert warp.passages_for_plan == 20 and warp.max_sections == 4  # the rest is still fitted
    assert describe(chosen, warp) == "max_sections 4, max_expands 1"


def test_large_models_keep_the_released_budgets():
    assert derive(WarpSettings(), Speed(8_000_000_000, 5000, 40)) == WarpSettings()


@pytest.mark.parametrize("bad", [dict(parameters=0), dict(prefill_tps=0.0), dict(decode_tps=-1.0)])
def test_a_speed_must_be_positive(bad):
    with pytest.raises(ValueError, match="positive"):
        Speed(**{**dataclasses.asdict(Speed(SMOLLM2, 1.0, 1.0)), **bad})
