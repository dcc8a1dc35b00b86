"""Generation on a runtime kept across calls: reuse and growth, forced tokens in one pass, bitmasks applied on the
device path."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch
from test_fast_forward import PROMPT, choose_one

from sala_report.model import GenerationConfig, generate
from sala_report.model.generate import DraftBudget, RuntimeSlot, _allowed_on_device, apply_bitmask


def _bits(allowed: list[set[int]], words: int) -> np.ndarray:
    """Bitmasks built from sets by plain integer arithmetic (llguidance's layout: bit j of word w is token 32 w + j)."""
    out = np.zeros((len(allowed), words), dtype=np.uint32)
    for row, ids in enumerate(allowed):
        for i in ids:
            out[row, i // 32] |= np.uint32(1 << (i % 32))
    return out.view(np.int32)


@pytest.mark.parametrize("vocab", [64, 70, 100])  # a whole number of words, a partial word, ids past the mask
def test_bitmasks_mask_exactly_the_ids_not_allowed(vocab):
    rnd = random.Random(vocab)
    allowed = [{i for i in range(min(vocab, 96)) if rnd.random() < 0.3} | {31, 63} for _ in range(3)]
    bits = _bits(allowed, 3)  # 96 ids
    logits = torch.randn(3, vocab)
    for out in (
        apply_bitmask(logits, torch.from_numpy(bits)),
        logits.masked_fill(~_allowed_on_device(torch.from_numpy(bits), vocab), float("-inf")),
    ):
        for row in range(3):
            finite = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
            assert finite == {i for i in allowed[row] if i < vocab}
            assert torch.equal(out[row][sorted(finite)], logits[row][sorted(finite)])


def test_one_runtime_serves_calls_and_grows_only_when_needed(smollm2, smollm2_tok):
    ids = smollm2_tok.encode(PROMPT)
    config = GenerationConfig(max_new_tokens=12, temperature=0)
    slot = RuntimeSlot(smollm2)
    first = generate(smollm2, smollm2_tok, ids, config, runtime=slot)
    list(first)
    rt = slot.runtime
    second = generate(smollm2, smollm2_tok, ids[:5], config, runtime=slot)  # reset, not made again
    list(second)
    assert slot.created == 1 and slot.runtime is rt
    fresh = generate(smollm2, smollm2_tok, ids[:5], config)  # plain forward calls on a new cache
    list(fresh)
    assert second.token_ids == fresh.token_ids and second.text == fresh.text
    cancel = threading.Event()
    roomy = generate(smollm2, smollm2_tok, ids, GenerationConfig(max_new_tokens=6000), cancel=cancel, runtime=slot)
    for _ in roomy:
        cancel.set()  # room was planned for 6000 tokens; one is enough to see it
    assert slot.created == 2 and slot.runtime.cache.capacity >= len(ids) + 6000
    list(generate(smollm2, smollm2_tok, ids, config, runtime=slot))
    assert slot.created == 2


class Passes:
    """Counts the model's passes, through forward calls and runtime steps alike."""

    def __init__(self, lm):
        self.lm, self.n = lm, 0

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self.lm(*args, **kwargs)

    def step(self, *args, **kwargs):
        self.n += 1
        return self.lm.step(*args, **kwargs)


def test_forced_tokens_go_through_the_runtime_in_one_pass(smollm2, smollm2_tok):
    hook, forced = choose_one(smollm2_tok)
    ids = smollm2_tok.encode(PROMPT)
    config = GenerationConfig(max_new_tokens=40, temperature=0)
    plain = generate(smollm2, smollm2_tok, ids, config, logits_hook=hook)
    list(plain)
    lm = Passes(smollm2)
    chunked = generate(lm, smollm2_tok, ids, config, logits_hook=hook, fast_forward=forced, runtime=RuntimeSlot(lm))
    list(chunked)
    assert chunked.token_ids == plain.token_ids and chunked.finish_reason == "stop"
    assert chunked.forced_tokens == len(chunked.token_ids) - 1 and lm.n == 2  # the prompt, then the forced chunk


def test_draft_budget_backs_off_and_recovers():
    budget = DraftBudget(8)
    sizes = []
    for _ in range(4):  # every draft rejected: 8, 4, 2, 1, then none
        sizes.append(budget.next())
        budget.verified(sizes[-1], 0)
    assert sizes == [8, 4, 2, 1] and budget.next() == 0
    assert [budget.next() for _ in range(DraftBudget.PAUSE)][-1] == 1  # tried again after a pause
    budget.verified(1, 1)
    assert budget.next() == 2
    budget.verified(2, 2)
    budget.verified(3, 3)  # a short match kept whole does not shrink the budget
    assert budget.next() == 6
    budget.verified(6, 2)
    assert budget.next() == 2
